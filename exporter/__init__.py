"""The per-cluster agent: runs probes on schedule and publishes what it found.

It never imports ``aggregator``; only ``exporter/kube/`` may import ``kubernetes``.
"""
