"""The probe model and the built-in probers.

A leaf package: it imports nothing else of kubeprober, so the agent, the aggregator and
third-party probers can all depend on it. Kubernetes is reached only through ``ctx.kube``.
"""
