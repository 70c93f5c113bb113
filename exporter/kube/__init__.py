"""The agent's Kubernetes mode, built on the shared API layer (:mod:`kubeprober.kube`).

Small modules, one idea each::

    watching     Probe objects (followed by list-then-watch) into a validated probe set
    conditions   the Valid and Scheduled conditions on each Probe
    statuses     ProbeStatus writes: coalesced, rate-limited, retried through outages
    restore      rebuild the result store from ProbeStatus objects on start
    events       status transitions as Kubernetes Events on the Probe
    access       ctx.kube: the API for Kubernetes probers, paced, within each check's deadline
    mode         the above wired together for the agent

Nothing here may block the event loop or let an API failure stop probing.
"""
