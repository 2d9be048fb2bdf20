"""`python -m serving observability`: write a stack's dashboard, alert rules and DCGM counters file.

Reads the stack through the one loader (`load_settings`), as `render` does, so the namespace and
startup timeout in the rules are the stack's own. Writes, by default under `build/<stack>/`:

- `dashboard.json`: the Grafana dashboard (import it: docs/observability.md);
- `alerts.yaml`: the Prometheus rules file, with runbooks (`promtool check rules` accepts it);
- `dcgm-counters.csv`: the counters file dcgm-exporter needs for every GPU series the stack uses;
- `scrape-config.yaml`: the three scrape jobs with Kubernetes service discovery, for Amazon
  Managed Prometheus's scraper or an in-cluster Prometheus (`promtool check config` accepts it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from serving.config.project import add_stack_arguments, assemble_config, parse_assignments, stack_name
from serving.config.settings import SettingsError, load_settings
from serving.observability.alerts import AlertSettings, render_rules_yaml
from serving.observability.catalogue import render_dcgm_counters_csv
from serving.observability.dashboard import render_dashboard_json
from serving.observability.queries import Scope
from serving.observability.scrape import render_scrape_config_yaml
from serving.workload.manifests import APP_NAME, GATEWAY_CONTAINER, SERVER_CONTAINER

DASHBOARD_FILE = "dashboard.json"
ALERTS_FILE = "alerts.yaml"
DCGM_COUNTERS_FILE = "dcgm-counters.csv"
SCRAPE_CONFIG_FILE = "scrape-config.yaml"


def write_observability(stack: str, out: Path, scope: Scope, alert_settings: AlertSettings) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {
        DASHBOARD_FILE: render_dashboard_json(scope, stack),
        ALERTS_FILE: render_rules_yaml(
            scope, alert_settings, group_name=f"gpt-oss-{stack}", extra_labels={"stack": stack}
        ),
        DCGM_COUNTERS_FILE: render_dcgm_counters_csv(),
        SCRAPE_CONFIG_FILE: render_scrape_config_yaml(scope),
    }
    written = []
    for name, text in files.items():
        path = out / name
        path.write_text(text)
        written.append(path)
    return written


def _run(args: argparse.Namespace) -> int:
    try:
        overrides = parse_assignments(args.settings)
        _, config, secret_keys = assemble_config(args.stack, overrides)
        serving = load_settings(config, secret_keys).serving
    except (SettingsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.ttft_slo_seconds is not None and args.ttft_slo_seconds <= 0:
        print("error: --ttft-slo-seconds must be positive", file=sys.stderr)
        return 2
    name = stack_name(args.stack)
    scope = Scope(
        namespace=serving.namespace,
        deployment=APP_NAME,
        server_container=SERVER_CONTAINER,
        gateway_container=GATEWAY_CONTAINER,
    )
    defaults = AlertSettings()
    alert_settings = AlertSettings(
        ttft_p90_slo_seconds=args.ttft_slo_seconds or defaults.ttft_p90_slo_seconds,
        startup_timeout_minutes=serving.startup_timeout_minutes,
    )
    out = Path(args.out) if args.out else Path("build") / name
    for path in write_observability(name, out, scope, alert_settings):
        print(path)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "observability",
        help="write the stack's Grafana dashboard, Prometheus alert rules and DCGM counters file",
    )
    add_stack_arguments(parser)
    parser.add_argument("--out", help="directory to write to (default build/<stack>)")
    parser.add_argument(
        "--ttft-slo-seconds",
        type=float,
        help=f"TTFT p90 objective for the alert (default {AlertSettings.ttft_p90_slo_seconds:g})",
    )
    parser.set_defaults(func=_run)
