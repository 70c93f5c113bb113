"""The probe model and the built-in probers.

A leaf package: of kubeprober it imports only the shared pieces and the resource names of
``kubeprober.kube.resources`` (standard library only), so the agent, the aggregator and
third-party probers can all depend on it. Kubernetes is reached only through ``ctx.kube``.
"""
