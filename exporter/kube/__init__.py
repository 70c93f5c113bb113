"""The agent's Kubernetes layer: the only agent code that imports ``kubernetes``.

Small modules, one idea each::

    errors       the exception tree and the one place client errors are translated
    resources    the resources the agent touches, and the permissions each call needs
    api          async facade over the sync client (bounded thread pool, request timeouts)
    streams      a watch request read in a thread, fed to an asyncio queue
    limits       token bucket and exponential backoff
    tasks        named, guarded background tasks and their shutdown
    watching     list + watch Probe CRs into a validated probe set
    conditions   the Valid and Scheduled conditions on each Probe
    statuses     ProbeStatus writes: coalesced, rate-limited, retried through outages
    restore      rebuild the result store from ProbeStatus objects on start
    events       status transitions as Kubernetes Events on the Probe
    mode         the above wired together for the agent

Nothing here may block the event loop or let an API failure stop probing.
"""
