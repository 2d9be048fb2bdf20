"""Run the real Pulumi program offline, under Pulumi's mock runtime (`make plan`).

`offline.program.run_program` executes `__main__.py` for a stack with that stack's configuration
and returns every resource the program registered; `offline.render` turns that into the readable
tree, the Kubernetes YAML and `plan.json` that `python -m offline plan` writes.
"""
