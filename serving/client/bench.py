"""`python -m serving bench`: the template's benchmark scenario against a live endpoint.

Defaults are the template's scenario: 150 requests, 16 in flight, about 4000 input tokens each.
The output length defaults to 1000 tokens: gpt-oss is a reasoning model and spends a few hundred
tokens on `delta.reasoning` before the answer, so a shorter budget (e.g. 256) often ends before the
first answer token and leaves "time to first answer token" undefined; 1000 keeps decode, the phase
that dominates latency in serving, the larger part of each request while a run of 150 requests
stays around a minute or two on two H100s. The server may stop earlier (end of answer): token
counts always come from the server's `usage`, never from the request. `--ignore-eos` asks servers
that support it (TensorRT-LLM, vLLM) for exactly `--output-tokens` tokens.

Prompts: a body of random common English words (the same in every prompt), sized by calibration
against the server's own `usage.prompt_tokens` (no tokenizer can be downloaded here): two probes
with `max_tokens: 1` measure the chat-template overhead and the tokens per word, then pairs of
probes check and correct the word count (at most 12 probes in all, none counted in the results).
Each prompt starts with a unique marker (`[run id-request index]`) so that no two share a cached
prefix (block reuse is on in the template); `--shared-prefix-fraction F` instead puts the first
F of the body before the marker, a prefix shared by every prompt, to measure KV block reuse.
The chat template's own preamble (system header) is shared by every prompt whatever is chosen.

Before anything else `/v1/models` must list the model. Warm-up requests (`--warmup-requests`,
default 2) run first and are not counted.
Concurrency: a pool of `--concurrency` threads, each with its own `requests.Session`; the next
request starts as soon as one finishes. The progress bar is tqdm (pinned): it keeps ETA and rate
right on a terminal and degrades to plain lines in CI logs, at no cost in the timing path.

`--bounds FILE` reads the modelled bounds that `python -m serving capacity --json FILE` wrote
(the client imports nothing of the model: it only reads that file) and prints each measured
figure of the template's table beside its bound and their ratio.

Exit codes: 0 every request succeeded; 1 some requests failed or the endpoint failed before the
run (one line `bench FAILED: ...` or `bench: N of M requests failed; first error: ...`);
2 bad arguments or settings.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import requests

from serving.client.metrics import RequestRecord, distribution_table, percentile, summarize, template_table
from serving.client.outputs import SettingsError, add_endpoint_arguments, resolve_settings
from serving.client.smoke import SmokeFailure, add_timeout_arguments, check_models, timeouts_from
from serving.client.stream import Endpoint, StreamResult, Timeouts, stream_chat_completion

DEFAULT_REQUESTS = 150
DEFAULT_CONCURRENCY = 16
DEFAULT_INPUT_TOKENS = 4000
DEFAULT_OUTPUT_TOKENS = 1000
EXIT_OK, EXIT_FAILED, EXIT_BAD_SETTINGS = 0, 1, 2

# Filler vocabulary: common words that tokenize to one or two tokens in any BPE vocabulary.
FILLER_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "it",
    "that",
    "for",
    "on",
    "with",
    "as",
    "was",
    "at",
    "by",
    "be",
    "this",
    "from",
    "or",
    "have",
    "an",
    "are",
    "not",
    "but",
    "all",
    "they",
    "one",
    "had",
    "there",
    "time",
    "year",
    "people",
    "way",
    "day",
    "man",
    "thing",
    "woman",
    "life",
    "child",
    "world",
    "school",
    "state",
    "family",
    "student",
    "group",
    "country",
    "problem",
    "hand",
    "part",
    "place",
    "case",
    "week",
    "company",
    "system",
    "program",
    "question",
    "work",
    "government",
    "number",
    "night",
    "point",
    "home",
    "water",
    "room",
    "mother",
    "area",
    "money",
    "story",
]
# Word counts of the two calibration probes; far apart so the slope is well measured.
PROBE_WORDS = (32, 288)
# Prompts averaged per check of the word count, and at most this many corrections.
CHECK_PROBES = 2
CORRECTIONS = 4
# Calibration prompts get markers from here on, formatted like the run's (6 digits).
PROBE_INDEX = 999_000
WARMUP_INDEX = 998_000
# Keep the run's markers (0 .. requests-1) clear of the warm-up and probe ranges.
MAX_REQUESTS = 100_000
MAX_WARMUP = 100


class BenchError(Exception):
    """The run cannot go on; the message is the one line shown to the user."""


@dataclass(frozen=True)
class PromptPlan:
    """How prompts are built: `words` filler words per prompt, `shared_words` of them common."""

    words: int
    shared_words: int
    overhead_tokens: float
    tokens_per_word: float
    calibrated_prompt_tokens: int


class PromptFactory:
    """Builds prompt texts: `[marker] body`, or `shared part of body [marker] rest of body`.

    The body is the same random word sequence in every prompt (fixed by `seed`), so all prompts
    of a run have the same length in tokens up to the marker's few; the marker (run id and
    request index) makes each prompt unique from its first token on. KV block reuse matches
    prefixes only, so an identical body after a unique marker is never reused.
    """

    def __init__(self, run_id: str, seed: int) -> None:
        self.run_id = run_id
        self._rng = random.Random(seed)
        self._body: list[str] = []

    def body(self, words: int) -> list[str]:
        while len(self._body) < words:
            self._body.append(self._rng.choice(FILLER_WORDS))
        return self._body[:words]

    def marker(self, index: int) -> str:
        return f"[{self.run_id}-{index:06d}]"

    def text(self, index: int, words: int, shared_words: int = 0) -> str:
        body = self.body(words)
        shared_words = min(shared_words, words)
        return " ".join([*body[:shared_words], self.marker(index), *body[shared_words:]])


def calibrate(
    probe: Callable[[str], int],
    factory: PromptFactory,
    target_tokens: int,
    shared_fraction: float = 0.0,
) -> PromptPlan:
    """Find the filler word count whose prompt the server counts as `target_tokens`.

    `probe(text)` returns the server's `usage.prompt_tokens` for a one-message chat with `text`.
    Prompt tokens are close to linear in the word count: overhead + rate x words. Two probes give
    the line; then the count is measured (mean of CHECK_PROBES prompts) and corrected along the
    line until within half a word or 0.5 % of the target, at most CORRECTIONS times; the count
    measured closest to the target wins.
    """
    low_words, high_words = PROBE_WORDS
    low = probe(factory.text(PROBE_INDEX, low_words))
    high = probe(factory.text(PROBE_INDEX + 1, high_words))
    rate = (high - low) / (high_words - low_words)
    if rate <= 0:
        raise BenchError(f"calibration: prompt_tokens did not grow with the prompt ({low} then {high})")
    overhead = low - rate * low_words
    if target_tokens < overhead + rate:
        raise BenchError(
            f"--input-tokens {target_tokens} is below the smallest prompt this server counts "
            f"(about {overhead + rate:.0f} tokens of chat template and marker); ask for more"
        )
    probe_index = PROBE_INDEX + 2

    def mean_count(words: int) -> float:
        # Markers differ a little in tokens: average a few prompts.
        nonlocal probe_index
        texts = [factory.text(probe_index + k, words) for k in range(CHECK_PROBES)]
        probe_index += CHECK_PROBES
        return sum(probe(text) for text in texts) / CHECK_PROBES

    # Words tokenize unevenly, so the line is only a first guess: correct it a few times.
    words = max(1, round((target_tokens - overhead) / rate))
    measured_at = {words: mean_count(words)}
    for _ in range(CORRECTIONS):
        error = target_tokens - measured_at[words]
        if abs(error) <= max(rate / 2, 0.005 * target_tokens):
            break
        words = max(1, words + (round(error / rate) or (1 if error > 0 else -1)))
        if words in measured_at:
            break  # oscillating between two counts around a long word: take the closer
        measured_at[words] = mean_count(words)
    words = min(measured_at, key=lambda count: abs(target_tokens - measured_at[count]))
    measured = round(measured_at[words])
    shared_words = round(words * shared_fraction)
    return PromptPlan(words, shared_words, overhead, rate, measured)


def record_from(result: StreamResult) -> RequestRecord:
    times = result.token_times
    return RequestRecord(
        ttft_s=result.ttft_s,
        latency_s=result.latency_s,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        error=result.error,
        ttft_content_s=result.ttft_content_s,
        itl_s=[later - earlier for earlier, later in itertools.pairwise(times)],
    )


@dataclass(frozen=True)
class RunConfig:
    endpoint: Endpoint
    model: str
    max_tokens: int
    concurrency: int
    timeouts: Timeouts
    extra_body: dict[str, Any]
    # Called with each parsed chunk and its arrival time; the client-overhead benchmark uses it.
    on_chunk: Callable[[dict[str, Any], float], None] | None = None


def run_requests(
    config: RunConfig,
    prompts: Sequence[str],
    progress: Callable[[], None] | None = None,
) -> tuple[list[StreamResult], float]:
    """Send every prompt, `config.concurrency` at a time; return results (in prompt order) and wall time."""
    local = threading.local()
    sessions: list[requests.Session] = []
    sessions_lock = threading.Lock()

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = config.endpoint.session()
            with sessions_lock:
                sessions.append(local.session)
        return local.session

    def one(text: str) -> StreamResult:
        try:
            return stream_chat_completion(
                session(),
                config.endpoint,
                config.model,
                [{"role": "user", "content": text}],
                max_tokens=config.max_tokens,
                timeouts=config.timeouts,
                extra_body=config.extra_body,
                on_chunk=config.on_chunk,
            )
        except Exception as exc:
            now = time.perf_counter()
            return StreamResult(start=now, end=now, error=f"client error: {type(exc).__name__}: {exc}")

    results: list[StreamResult | None] = [None] * len(prompts)
    started = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="bench")
    try:
        futures = {pool.submit(one, text): index for index, text in enumerate(prompts)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if progress is not None:
                progress()
    except KeyboardInterrupt:
        # Start nothing new; requests in flight end within their timeouts.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    wall_time = time.perf_counter() - started
    for held in sessions:
        held.close()
    return [r for r in results if r is not None], wall_time


def _probe_function(config: RunConfig) -> Callable[[str], int]:
    session = config.endpoint.session()

    def probe(text: str) -> int:
        result = stream_chat_completion(
            session,
            config.endpoint,
            config.model,
            [{"role": "user", "content": text}],
            max_tokens=1,
            timeouts=config.timeouts,
            # Same fields as the run: e.g. reasoning_effort changes gpt-oss's system header.
            extra_body=config.extra_body,
        )
        if result.error is not None or result.prompt_tokens is None:
            raise BenchError(f"calibration probe failed: {result.error}")
        return result.prompt_tokens

    return probe


def preflight(config: RunConfig) -> None:
    """`/v1/models` must list the model: a server that answers under any model name would
    otherwise be benchmarked under a mistyped one, and the report would carry that name."""
    with config.endpoint.session() as session:
        try:
            check_models(session, config.endpoint, config.model, config.timeouts)
        except SmokeFailure as exc:
            raise BenchError(str(exc)) from None


def run_benchmark(args: argparse.Namespace, config: RunConfig) -> tuple[dict[str, Any], str]:
    """Check the model is served, calibrate, warm up, run; return the JSON report and the tables."""
    preflight(config)
    run_id = args.run_id or f"{random.SystemRandom().getrandbits(32):08x}"
    factory = PromptFactory(run_id=run_id, seed=args.seed)
    plan = calibrate(_probe_function(config), factory, args.input_tokens, args.shared_prefix_fraction)
    if args.warmup_requests:
        warmup_prompts = [
            factory.text(WARMUP_INDEX + i, plan.words, plan.shared_words) for i in range(args.warmup_requests)
        ]
        warmup_config = replace(config, concurrency=min(config.concurrency, len(warmup_prompts)))
        warmup_results, _ = run_requests(warmup_config, warmup_prompts)
        if all(not r.ok for r in warmup_results):
            raise BenchError(f"every warm-up request failed; first error: {warmup_results[0].error}")
    prompts = [factory.text(i, plan.words, plan.shared_words) for i in range(args.requests)]
    bar = _progress_bar(args.requests, enabled=not args.no_progress)
    try:
        results, wall_time = run_requests(config, prompts, progress=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    records = [record_from(r) for r in results]
    summary = summarize(records, wall_time_s=wall_time, concurrency=config.concurrency)
    scenario = {
        "requests": args.requests,
        "concurrency": config.concurrency,
        "input_tokens": args.input_tokens,
        "output_tokens": config.max_tokens,
        "shared_prefix_fraction": args.shared_prefix_fraction,
        "warmup_requests": args.warmup_requests,
        "model": config.model,
        "endpoint": config.endpoint.api_base,
        "run_id": run_id,
        "extra_body": config.extra_body,
    }
    report = {
        "scenario": scenario,
        "calibration": asdict(plan),
        "summary": summary,
        "requests": [record.to_json() for record in records],
    }
    scenario_line = (
        f"{args.requests} requests, {config.concurrency} concurrent, ~{args.input_tokens} input tokens "
        f"(calibrated: {plan.calibrated_prompt_tokens}), up to {config.max_tokens} output tokens, "
        f"model {config.model}"
    )
    markdown = template_table(summary, scenario_line) + "\n\n" + distribution_table(summary)
    if args.bounds:
        comparison = compare_with_bounds(summary, read_bounds(args.bounds), scenario)
        report["bounds"] = comparison
        markdown += "\n\n" + bounds_table(comparison)
    return report, markdown


def _progress_bar(total: int, enabled: bool):  # -> tqdm | None
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="req", desc="bench", file=sys.stderr, dynamic_ncols=True)


def write_latency_plot(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Histogram of end-to-end latency and TTFT of the successful requests (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if r["error"] is None]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = (
        ("end-to-end latency (s)", [r["latency_s"] for r in ok], "tab:blue"),
        ("TTFT (s)", [r["ttft_s"] for r in ok if r["ttft_s"] is not None], "tab:orange"),
    )
    for axis, (label, values, colour) in zip(axes, panels, strict=True):
        axis.hist(values, bins=30, color=colour)
        if values:
            for p, style in ((50, "--"), (99, ":")):
                axis.axvline(percentile(values, p), color="black", linestyle=style, label=f"p{p}")
            axis.legend()
        axis.set_xlabel(label)
        axis.set_ylabel("requests")
    figure.suptitle(f"{len(ok)} successful requests")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# The summary's metrics a bounds file may bound, in the order printed, with their labels.
BOUNDED_METRICS = (
    ("average_latency_s", "Average latency (s)"),
    ("average_ttft_s", "Average TTFT (s)"),
    ("average_perceived_tokens_per_second", "Average perceived tokens per second"),
    ("average_overall_throughput", "Average overall throughput (tokens/s)"),
    ("tpot_s", "TPOT, mean (s)"),
    ("output_throughput_tokens_per_s", "Output throughput (tokens/s)"),
)


def read_bounds(path: str) -> dict[str, Any]:
    """The `template_table` object of a `serving capacity --json` file (or such an object alone)."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise SettingsError(f"--bounds {path}: cannot read it ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise SettingsError(f"--bounds {path}: not JSON ({exc.msg})") from None
    table = data.get("template_table", data) if isinstance(data, dict) else None
    known = [key for key, _ in BOUNDED_METRICS if isinstance(table, dict) and key in table]
    if not isinstance(table, dict) or not known:
        raise SettingsError(
            f"--bounds {path}: no modelled bounds in it; write one with "
            "python -m serving capacity --stack <stack> --json FILE"
        )
    for key in known:
        entry = table[key]
        if not (
            isinstance(entry, dict)
            and entry.get("bound") in ("lower", "upper")
            and isinstance(entry.get("value"), (int, float))
            and entry["value"] > 0
        ):
            raise SettingsError(
                f'--bounds {path}: {key} should be {{"bound": "lower" or "upper", "value": > 0}}'
            )
    return table


def compare_with_bounds(
    summary: dict[str, Any], bounds: dict[str, Any], scenario: dict[str, Any]
) -> dict[str, Any]:
    """Each bounded metric: measured, bound, measured / bound, and whether the bound held. A
    lower bound holds when the measurement is at or above it, an upper bound at or below."""
    rows = []
    for key, label in BOUNDED_METRICS:
        if key not in bounds:
            continue
        measured = summary.get(key)
        if isinstance(measured, dict):
            measured = measured.get("mean")
        bound, direction = float(bounds[key]["value"]), bounds[key]["bound"]
        ratio = None if measured is None else measured / bound
        held = None if ratio is None else (ratio >= 1 if direction == "lower" else ratio <= 1)
        rows.append(
            {
                "metric": key,
                "label": label,
                "measured": measured,
                "bound": direction,
                "modelled": bound,
                "ratio": ratio,
                "held": held,
            }
        )
    mismatches = [
        f"{name} {scenario[name]} here, {bounds[name]} in the bounds"
        for name in ("concurrency", "input_tokens", "output_tokens")
        if name in bounds and bounds[name] != scenario.get(name)
    ]
    return {"rows": rows, "scenario_mismatches": mismatches}


def bounds_table(comparison: dict[str, Any]) -> str:
    """Markdown: measured beside modelled, and the ratio."""
    lines = [
        "Measured against the modelled bounds (python -m serving capacity; bounds, not predictions):",
        "",
        "| metric | measured | modelled bound | measured / bound |",
        "| --- | --- | --- | --- |",
    ]
    for row in comparison["rows"]:
        sign = ">=" if row["bound"] == "lower" else "<="
        measured = "n/a" if row["measured"] is None else f"{row['measured']:,.4g}"
        ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.2f}"
        if row["held"] is False:
            ratio += " (outside the bound: the model or the run is wrong)"
        lines.append(f"| {row['label']} | {measured} | {sign} {row['modelled']:,.4g} | {ratio} |")
    lines += [
        f"\nWARNING: the bounds are for another scenario: {m}" for m in comparison["scenario_mismatches"]
    ]
    return "\n".join(lines)


def validate(args: argparse.Namespace) -> None:
    for name in ("requests", "concurrency", "input_tokens", "output_tokens"):
        if getattr(args, name) < 1:
            raise SettingsError(f"--{name.replace('_', '-')} {getattr(args, name)} must be at least 1")
    if args.requests > MAX_REQUESTS:
        raise SettingsError(f"--requests {args.requests} is more than {MAX_REQUESTS:,}; split the run")
    if not 0 <= args.warmup_requests <= MAX_WARMUP:
        raise SettingsError(f"--warmup-requests {args.warmup_requests} must lie in [0, {MAX_WARMUP}]")
    if not 0.0 <= args.shared_prefix_fraction < 1.0:
        raise SettingsError(f"--shared-prefix-fraction {args.shared_prefix_fraction} must lie in [0, 1)")
    if args.bounds:
        read_bounds(args.bounds)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SettingsError("--plot needs matplotlib: pip install matplotlib==3.11.2") from None


def parse_extra_body(args: argparse.Namespace) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if args.extra_body:
        try:
            extra = json.loads(args.extra_body)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"--extra-body is not JSON ({exc.msg}): {args.extra_body!r}") from None
        if not isinstance(extra, dict):
            raise SettingsError(f"--extra-body must be a JSON object, got {args.extra_body!r}")
        reserved = {"model", "messages", "stream", "stream_options"} & extra.keys()
        if reserved:
            raise SettingsError(f"--extra-body may not set {sorted(reserved)}: bench sets them itself")
    if args.ignore_eos:
        extra["ignore_eos"] = True
    return extra


def main(args: argparse.Namespace) -> int:
    try:
        validate(args)
        extra_body = parse_extra_body(args)
        settings = resolve_settings(args)
        endpoint = Endpoint.from_base_url(settings.base_url, settings.api_key, settings.ca_file)
        timeouts = timeouts_from(args)
    except (SettingsError, ValueError) as exc:
        print(f"bench FAILED: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    config = RunConfig(endpoint, settings.model, args.output_tokens, args.concurrency, timeouts, extra_body)
    try:
        report, markdown = run_benchmark(args, config)
    except BenchError as exc:
        print(f"bench FAILED: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("bench FAILED: interrupted", file=sys.stderr)
        return 130
    print(markdown)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        write_latency_plot(report["requests"], Path(args.plot))
    summary = report["summary"]
    if summary["requests_failed"]:
        first_error = next(r["error"] for r in report["requests"] if r["error"] is not None)
        total = summary["requests_failed"] + summary["requests_ok"]
        print(
            f"bench: {summary['requests_failed']} of {total} requests failed; first error: {first_error}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run the template's benchmark scenario and fill in its table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_endpoint_arguments(parser)
    scenario = parser.add_argument_group("scenario")
    add = scenario.add_argument
    add("--requests", type=int, default=DEFAULT_REQUESTS, help="timed requests (default 150)")
    add("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="requests in flight (default 16)")
    add(
        "--input-tokens",
        type=int,
        default=DEFAULT_INPUT_TOKENS,
        help="prompt tokens per request (default 4000)",
    )
    add(
        "--output-tokens",
        type=int,
        default=DEFAULT_OUTPUT_TOKENS,
        help="max_tokens per request (default 1000)",
    )
    add("--warmup-requests", type=int, default=2, help="uncounted requests before the run (default 2)")
    scenario.add_argument(
        "--shared-prefix-fraction",
        type=float,
        default=0.0,
        help="share of each prompt that is the same in every request, to measure KV block reuse (default 0: none)",
    )
    scenario.add_argument(
        "--ignore-eos", action="store_true", help="send ignore_eos: true (TensorRT-LLM, vLLM)"
    )
    scenario.add_argument(
        "--extra-body",
        metavar="JSON",
        help='more request fields, e.g. \'{"reasoning_effort": "medium"}\' (TensorRT-LLM defaults gpt-oss to low)',
    )
    scenario.add_argument("--seed", type=int, default=0, help="seed of the filler text")
    scenario.add_argument(
        "--run-id", help="marker in every prompt (default: random, so runs never share a cache)"
    )
    output = parser.add_argument_group("output")
    output.add_argument("--json", metavar="FILE", help="write summary and per-request results as JSON")
    output.add_argument("--plot", metavar="PNG", help="write a latency/TTFT histogram (needs matplotlib)")
    output.add_argument(
        "--bounds",
        metavar="FILE",
        help="modelled bounds from `python -m serving capacity --json FILE`: print measured / bound",
    )
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_timeout_arguments(parser, read=120.0, total=900.0)
    parser.set_defaults(func=main)
