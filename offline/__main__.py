"""`python -m offline plan --stack prod [--out build]`: the stack's plan, computed offline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from offline.program import run_program
from offline.render import check_no_secrets, render_tree, write_plan
from serving.config.project import PROJECT_DIR, add_stack_arguments, parse_assignments, stack_file
from serving.config.settings import SettingsError
from serving.runtime.coldstart import render_cold_start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offline")
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser("plan", help="run __main__.py under Pulumi mocks and show the plan")
    add_stack_arguments(plan)
    plan.add_argument(
        "--out", type=Path, default=PROJECT_DIR / "build", help="writes <out>/<stack>/ (default build/)"
    )
    args = parser.parse_args(argv)

    try:
        overrides = parse_assignments(args.settings)
    except ValueError as error:
        parser.error(str(error))
    try:
        result = run_program(args.stack, config=overrides or None)
    except SettingsError as error:
        print(f"{stack_file(args.stack).name}: {error}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return 2
    tree = render_tree(result)
    check_no_secrets(result, tree, "the terminal")
    print(tree, end="")
    # What a new or replaced GPU node costs in time before it serves: modelled, not measured.
    print("\n" + render_cold_start(), end="")
    written = write_plan(result, args.out)
    print(f"\nWrote {len(written)} files under {args.out / result.stack}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
