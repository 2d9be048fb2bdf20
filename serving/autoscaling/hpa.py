"""The HPA controller's decision at each sync, as Kubernetes computes it for one external metric
with an AverageValue target (what a KEDA ScaledObject with a Prometheus trigger creates):

1. each metric's recommendation (policy.desired_replicas_for_total: tolerance, then ceil), the
   larger of the two triggers';
2. stabilisation: the lowest recommendation of the scale-up window and the highest of the
   scale-down window bound the result, so scale-down follows the highest load of the window;
3. rate limits (behavior policies, selectPolicy Max): against the replicas at the start of each
   policy's period, then minReplicas and maxReplicas.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from serving.autoscaling.policy import AutoscalingPolicy, desired_replicas_for_total


@dataclass
class HorizontalAutoscaler:
    policy: AutoscalingPolicy
    # (time, unstabilised recommendation), oldest first.
    recommendations: deque[tuple[float, int]] = field(default_factory=deque)
    # (time, replicas added (> 0) or removed (< 0)) by this controller.
    scale_events: deque[tuple[float, int]] = field(default_factory=deque)

    def decide(
        self, now: float, current_replicas: int, in_flight: float, finished_per_s: float | None = None
    ) -> int:
        """Replicas after this sync, from the two triggers' totals over the pods (the HPA takes
        the larger recommendation when it has several metrics)."""
        p = self.policy
        if current_replicas > p.max_replicas:
            return self._record(now, current_replicas, p.max_replicas)
        if current_replicas < p.min_replicas:
            return self._record(now, current_replicas, p.min_replicas)
        proposal = desired_replicas_for_total(
            current_replicas, in_flight, p.target_in_flight_per_replica, p.tolerance
        )
        if p.target_finished_per_s_per_replica is not None and finished_per_s is not None:
            by_rate = desired_replicas_for_total(
                current_replicas, finished_per_s, p.target_finished_per_s_per_replica, p.tolerance
            )
            proposal = max(proposal, by_rate)
        stabilised = self._stabilise(now, current_replicas, proposal)
        return self._record(now, current_replicas, self._rate_limited(now, current_replicas, stabilised))

    def _stabilise(self, now: float, current: int, proposal: int) -> int:
        up_cutoff = now - self.policy.scale_up_stabilization_s
        down_cutoff = now - self.policy.scale_down_stabilization_s
        oldest = min(up_cutoff, down_cutoff)
        while self.recommendations and self.recommendations[0][0] <= oldest:
            self.recommendations.popleft()
        up, down = proposal, proposal
        for stamp, value in self.recommendations:
            if stamp > up_cutoff:
                up = min(up, value)
            if stamp > down_cutoff:
                down = max(down, value)
        self.recommendations.append((now, proposal))
        return min(max(current, up), down)

    def _rate_limited(self, now: float, current: int, desired: int) -> int:
        p = self.policy
        if desired > current:
            added = sum(n for t, n in self.scale_events if n > 0 and t > now - p.scale_up_period_s)
            start = current - added
            limit = max(start + p.scale_up_pods, math.ceil(start * (1 + p.scale_up_percent / 100)))
            return min(desired, max(limit, current), p.max_replicas)
        if desired < current:
            removed = -sum(n for t, n in self.scale_events if n < 0 and t > now - p.scale_down_period_s)
            start = current + removed
            # selectPolicy Max: the policy that allows the larger change, i.e. the lower limit.
            limits = []
            if p.scale_down_pods is not None:
                limits.append(start - p.scale_down_pods)
            if p.scale_down_percent is not None:
                limits.append(int(start * (1 - p.scale_down_percent / 100)))
            return max(desired, min(min(limits), current), p.min_replicas)
        return desired

    def _record(self, now: float, current: int, decided: int) -> int:
        horizon = max(self.policy.scale_up_period_s, self.policy.scale_down_period_s)
        while self.scale_events and self.scale_events[0][0] <= now - horizon:
            self.scale_events.popleft()
        if decided != current:
            self.scale_events.append((now, decided - current))
        return decided
