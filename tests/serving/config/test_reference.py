"""docs/configuration.md is generated from Pulumi.yaml and must stay in step with it."""

from __future__ import annotations

from serving.config.project import PROJECT_DIR, declared_config
from serving.config.reference import COMMAND, render_reference

REFERENCE = PROJECT_DIR / "docs" / "configuration.md"


def test_committed_reference_is_up_to_date() -> None:
    assert REFERENCE.exists(), f"docs/configuration.md is missing: run `{COMMAND}`"
    assert REFERENCE.read_text() == render_reference(), (
        f"docs/configuration.md is out of date with Pulumi.yaml: run `{COMMAND}`"
    )


def test_every_key_appears_with_its_description() -> None:
    text = render_reference()
    declared = declared_config()
    assert declared, "Pulumi.yaml declares no config keys"
    for key, spec in declared.items():
        assert f"\n## {key}\n" in text, f"{key} has no section"
        assert f"[`{key}`](#{key.lower()})" in text, f"{key} is missing from the index table"
        description = str(spec.get("description") or "").strip()
        assert description, f"Pulumi.yaml gives {key} no description"
        assert description in text, f"the description of {key} is missing"


def test_keys_keep_pulumi_yaml_order() -> None:
    text = render_reference()
    positions = [text.index(f"\n## {key}\n") for key in declared_config()]
    assert positions == sorted(positions)


def test_render_is_stable() -> None:
    assert render_reference() == render_reference()
