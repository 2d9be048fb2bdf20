"""What one replica can do: how many requests run at once, and how long one takes.

Modelled from serving/runtime/performance.py: slots are the requests of the reference shape
that run at once (max_batch_size, or fewer if the KV cache holds fewer); a request's time in
service is TTFT + (output - 1) x TPOT at the batch it joins, both bounds, times
`bound_factor`. The bounds are lower bounds: the published measurements in docs/performance.md
ran 3.7 to 6.3 times slower than them, so the default factor is 5. A fixed `--service-time`
and `--capacity` replace the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from serving.autoscaling.policy import REFERENCE_SHAPE
from serving.runtime.options import ServingRuntime
from serving.runtime.performance import RequestShape, decode_step, max_concurrency, prefill_step

DEFAULT_BOUND_FACTOR = 5.0
# Token counts are rounded to this many for the cache of service times (well under 1 %).
_TOKEN_BUCKET = 64


@dataclass
class ReplicaService:
    slots: int
    description: str
    runtime: ServingRuntime | None = None
    bound_factor: float = DEFAULT_BOUND_FACTOR
    fixed_service_s: float | None = None
    _cache: dict[tuple[int, int, int], float] = field(default_factory=dict, repr=False)

    def service_s(self, input_tokens: int, output_tokens: int, batch: int) -> float:
        """Seconds from admission to the last token for a request joining a batch of `batch`."""
        if self.fixed_service_s is not None:
            return self.fixed_service_s
        cached = self._cache.get((input_tokens, output_tokens, batch))
        if cached is not None:
            return cached
        assert self.runtime is not None
        key = (_bucket(input_tokens), _bucket(output_tokens), batch)
        cached = self._cache.get(key)
        if cached is None:
            inputs, outputs = key[0], key[1]
            shape = RequestShape(inputs, outputs)
            ttft = prefill_step(self.runtime, inputs).seconds
            tpot = decode_step(self.runtime, batch, shape.mean_decode_context).seconds
            cached = self.bound_factor * (ttft + (outputs - 1) * tpot)
            self._cache[key] = cached
        self._cache[(input_tokens, output_tokens, batch)] = cached
        return cached


def _bucket(tokens: int) -> int:
    return max(_TOKEN_BUCKET * round(tokens / _TOKEN_BUCKET), 1)


def modelled_service(
    runtime: ServingRuntime,
    shape: RequestShape = REFERENCE_SHAPE,
    bound_factor: float = DEFAULT_BOUND_FACTOR,
    slots: int | None = None,
) -> ReplicaService:
    concurrent = slots if slots is not None else max_concurrency(runtime, shape)
    return ReplicaService(
        slots=concurrent,
        description=(
            f"{concurrent} requests at once per replica; service time = (TTFT + (output - 1) x TPOT) bounds "
            f"x {bound_factor:g} (performance model, {shape.input_tokens} in / {shape.output_tokens} out)"
        ),
        runtime=runtime,
        bound_factor=bound_factor,
    )


def fixed_service(slots: int, service_s: float) -> ReplicaService:
    return ReplicaService(
        slots=slots,
        description=f"{slots} requests at once per replica; {service_s:g} s each (--service-time)",
        fixed_service_s=service_s,
    )
