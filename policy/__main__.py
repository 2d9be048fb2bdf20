"""Entry point the Pulumi CLI runs: `pulumi preview --policy-pack policy`.

The CLI executes this file with the policy directory first on sys.path, so the repository root
(where `policy` and `serving` live as packages) is added here. Constructing `PolicyPack` starts
the analyzer's gRPC server and blocks until the CLI stops it: that is why nothing else imports
this module; `python -m policy.offline` and the tests use `policy.rules` directly.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack

from policy.rules import POLICIES

PolicyPack(
    name="gpt-oss-trtllm-guardrails",
    # Each policy sets its own level; anything added without one blocks rather than warns.
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=POLICIES,
)
