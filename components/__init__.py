"""Pulumi ComponentResources of the stack (network, cluster, nodes, device plugin, workload)."""
