"""Arrivals: the built-in load profiles (Poisson arrivals at a rate that changes with time) and
CSV traces of real request times. Deterministic for a given seed."""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from serving.autoscaling.policy import REFERENCE_SHAPE

HOUR = 3600.0
TRACE_COLUMNS = ("time_s", "input_tokens", "output_tokens")
MONOTONIC_SCALE_LIMIT = 2.0


class TraceError(ValueError):
    """A trace or profile that cannot be replayed; the message says where and what would work."""


@dataclass(frozen=True)
class Request:
    arrival_s: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Profile:
    """A rate in requests per second over time. The rates are sized against the prod defaults:
    a replica at its target of 48 in flight finishes about 1.1 requests a second (the bounds
    times the service-time factor), so 8 replicas carry about 8.7 a second."""

    name: str
    description: str
    rate: Callable[[float], float]  # requests per second at time t (s)
    peak_rate: float


def _steady(t: float) -> float:
    return 3.0


def _diurnal(t: float) -> float:
    # Lowest at midnight (0.5 /s), highest at noon (6.5 /s): a cosine over 24 hours.
    low, high = 0.5, 6.5
    return low + (high - low) * (1 - math.cos(2 * math.pi * t / (24 * HOUR))) / 2


def _burst(t: float) -> float:
    # 1 /s, with 30 minutes at 6 /s from the second hour (a launch, a batch job).
    return 6.0 if 2 * HOUR <= t % (6 * HOUR) < 2.5 * HOUR else 1.0


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("steady", "3 requests/s all along", _steady, 3.0),
        Profile(
            "diurnal", "0.5 requests/s at midnight rising to 6.5 at noon (a cosine over 24 h)", _diurnal, 6.5
        ),
        Profile("burst", "1 request/s, with 30 min at 6/s from 2 h (every 6 h)", _burst, 6.0),
    )
}


def profile_arrivals(
    profile: Profile,
    hours: float,
    seed: int,
    rate_scale: float = 1.0,
    input_tokens: int = REFERENCE_SHAPE.input_tokens,
    output_tokens: int = REFERENCE_SHAPE.output_tokens,
) -> list[Request]:
    """Poisson arrivals by thinning: candidates at the peak rate, each kept with probability
    rate(t) / peak. A larger `rate_scale` with the same seed keeps every arrival of the smaller
    one and adds more, for scales up to 2 (the candidates are drawn at a rate that does not depend on the scale),
    so more load never means fewer requests at any time."""
    if rate_scale <= 0:
        raise TraceError(f"--rate-scale {rate_scale:g}: above 0 (1 is the profile as written)")
    # Candidates at a ceiling that is the same for every scale up to 2 (so the superset property
    # holds there), thinned by the scaled rate.
    ceiling = profile.peak_rate * max(rate_scale, MONOTONIC_SCALE_LIMIT)
    rng = random.Random(seed)
    horizon = hours * HOUR
    requests: list[Request] = []
    scaled_peak = profile.peak_rate * rate_scale
    t = 0.0
    while True:
        t += rng.expovariate(ceiling)
        if t >= horizon:
            return requests
        draw = rng.random() * ceiling
        # Above the scaled peak no rate can keep it: skip evaluating the profile.
        if draw < scaled_peak and draw < profile.rate(t) * rate_scale:
            requests.append(Request(t, input_tokens, output_tokens))


def read_trace(path: Path, max_seq_len: int | None = None) -> list[Request]:
    """A CSV of `time_s,input_tokens,output_tokens` (a header line is optional), sorted by time."""
    try:
        text = path.read_text()
    except OSError as error:
        raise TraceError(f"--trace {path}: cannot read it ({error.strerror}); give a CSV file") from error
    return parse_trace(text.splitlines(), str(path), max_seq_len)


def parse_trace(lines: Iterable[str], name: str, max_seq_len: int | None = None) -> list[Request]:
    requests = []
    example = "e.g. 12.5,4000,1000"
    for number, row in enumerate(csv.reader(lines), start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        cells = [cell.strip() for cell in row]
        if number == 1 and cells[0].lower() in TRACE_COLUMNS:
            if tuple(c.lower() for c in cells) != TRACE_COLUMNS:
                raise TraceError(
                    f"--trace {name} line 1: header {','.join(cells)}; write {','.join(TRACE_COLUMNS)}"
                )
            continue
        if len(cells) != 3:
            raise TraceError(
                f"--trace {name} line {number}: {len(cells)} fields; write {','.join(TRACE_COLUMNS)}, {example}"
            )
        try:
            time_s = float(cells[0])
            input_tokens, output_tokens = int(cells[1]), int(cells[2])
        except ValueError:
            raise TraceError(
                f"--trace {name} line {number}: {','.join(cells)} is not a time in seconds and two whole "
                f"token counts; {example}"
            ) from None
        if not math.isfinite(time_s) or time_s < 0:
            raise TraceError(
                f"--trace {name} line {number}: time {cells[0]}: 0 or more seconds from the start"
            )
        if input_tokens < 1 or output_tokens < 1:
            raise TraceError(f"--trace {name} line {number}: token counts must be at least 1")
        if max_seq_len is not None and input_tokens + output_tokens > max_seq_len:
            raise TraceError(
                f"--trace {name} line {number}: {input_tokens + output_tokens} tokens, above max_seq_len "
                f"{max_seq_len} (the server would refuse it); at most {max_seq_len}"
            )
        requests.append(Request(time_s, input_tokens, output_tokens))
    if not requests:
        raise TraceError(f"--trace {name}: no requests; write one line per request, {example}")
    return sorted(requests, key=lambda r: r.arrival_s)
