"""`python -m offline plan --stack prod [--out build]`: the stack's plan, computed offline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from components.settings import SettingsError
from offline.program import PROJECT_DIR, run_program
from offline.render import check_no_secrets, render_tree, write_plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offline")
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser("plan", help="run __main__.py under Pulumi mocks and show the plan")
    plan.add_argument("--stack", default="prod", help="reads Pulumi.<stack>.yaml (default prod)")
    plan.add_argument("--out", type=Path, default=PROJECT_DIR / "build",
                      help="writes <out>/<stack>/ (default build/)")
    args = parser.parse_args(argv)

    try:
        result = run_program(args.stack)
    except SettingsError as error:
        print(f"Pulumi.{args.stack}.yaml: {error}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return 2
    tree = render_tree(result)
    check_no_secrets(result, tree, "the terminal")
    print(tree, end="")
    written = write_plan(result, args.out)
    print(f"\nWrote {len(written)} files under {args.out / args.stack}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
