"""What the stack measures, and how it is seen: metric catalogue, exporter, queries, alerts, dashboard.

Plain Python, no Pulumi. The iteration-stats exporter (`exporter.py`, `iteration_stats.py`) uses
the standard library only, so it runs as a sidecar in a slim Python image; this file imports
nothing for the same reason.
"""
