"""`python -m serving <command>`: see serving/cli.py."""

from serving.cli import main

raise SystemExit(main())
