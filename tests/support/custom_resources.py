"""Custom resources checked against the JSON schemas of npm's `@kubernetes-models/*` packages.

kubernetes-validate has the core API only. These packages are generated from each project's Go
API types and ship an ajv validator per kind; their `validate()` catches wrong types and values
but lets unknown fields through, so the script below also records which properties the
validators read and reports every other one (a misspelt field), per JSON pointer.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from serving.config.project import PROJECT_DIR

MODELS_DIR = PROJECT_DIR / "node_modules" / "@kubernetes-models"

_SCRIPT = r"""
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [moduleDir, inputFile, schemasJson] = process.argv.slice(2);
const SCHEMAS = JSON.parse(schemasJson);

// Wrap the object so that every property a validator reads, and every object whose keys it
// enumerates (a map such as a trigger's metadata), is recorded, per JSON pointer.
function tracker(root) {
  const nodes = new Map();
  function wrap(value, pointer) {
    if (value === null || typeof value !== "object") return value;
    if (nodes.has(pointer)) return nodes.get(pointer).proxy;
    const node = { value, read: new Set(), enumerated: false, proxy: null };
    node.proxy = new Proxy(value, {
      get(target, key, receiver) {
        const child = Reflect.get(target, key, receiver);
        if (typeof key !== "string") return child;
        node.read.add(key);
        return Object.hasOwn(target, key) ? wrap(child, `${pointer}/${key}`) : child;
      },
      ownKeys(target) {
        node.enumerated = true;
        return Reflect.ownKeys(target);
      },
    });
    nodes.set(pointer, node);
    return node.proxy;
  }
  return { proxy: wrap(root, ""), nodes };
}

function unknownFields(nodes) {
  const unknown = [];
  for (const [pointer, node] of nodes) {
    // Arrays are checked item by item; maps are enumerated; an object nothing was read from is
    // free-form (preserve-unknown-fields).
    if (Array.isArray(node.value) || node.enumerated || node.read.size === 0) continue;
    for (const key of Object.keys(node.value)) {
      if (!node.read.has(key)) unknown.push(`${pointer}/${key}`);
    }
  }
  return unknown;
}

const results = [];
for (const object of JSON.parse(fs.readFileSync(inputFile, "utf8"))) {
  const file = SCHEMAS[object.kind];
  if (!file) throw new Error(`no schema for kind ${object.kind}`);
  const { validate } = await import(pathToFileURL(path.join(moduleDir, "_schemas", file)).href);
  const { proxy, nodes } = tracker(object);
  const valid = validate(proxy);
  results.push({
    kind: object.kind,
    name: object.metadata?.name,
    errors: valid ? [] : validate.errors.map((e) => `${e.instancePath} ${e.keyword} ${JSON.stringify(e.params)}`),
    unknown: unknownFields(nodes),
  });
}
process.stdout.write(JSON.stringify(results));
"""


def validate_custom_resources(
    package: str,
    schemas: dict[str, str],
    objects: list[dict[str, Any]],
    scratch: Path,
    module_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """Each object checked against `@kubernetes-models/<package>`: `schemas` maps a kind to its
    validator file under `_schemas/`. Returns, per object, its schema errors and unknown fields."""
    node = shutil.which("node")
    assert node, (
        "node is not installed; the custom-resource schema check runs on Node.js (apt-get install nodejs)"
    )
    module = module_dir or MODELS_DIR / package
    assert (module / "package.json").is_file(), (
        f"@kubernetes-models/{package} is not installed at {module}: run `npm ci` in the repository "
        "root (package.json pins it)"
    )
    script = scratch / "validate-custom-resources.mjs"
    script.write_text(_SCRIPT)
    data = scratch / f"{package}-objects.json"
    data.write_text(json.dumps(objects))
    result = subprocess.run(
        [node, str(script), str(module), str(data), json.dumps(schemas)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
