"""Autoscaling: the policy the cluster runs (KEDA on in-flight requests per replica, the HPA's
algorithm underneath, cluster-autoscaler for the GPU nodes) and a simulator that replays load
through it. Plain Python; `policy` is what the cluster wiring reads, `simulate` what the
`python -m serving simulate` command runs. Everything here is modelled, nothing measured.
"""
