"""The one Kubernetes API layer both services build on: the only code that imports ``kubernetes``.

Small modules, one idea each::

    errors       the exception tree, and the one place client errors are translated
    resources    the resources we touch, their paths, and the permission each call needs
    api          async facade over the sync client (bounded thread pool, request timeouts)
    streams      a watch request read in a thread, fed to an asyncio queue
    watching     list, then watch from the list's version; relist on 410; back off

Pacing (token bucket, backoff) and task helpers are not Kubernetes-specific and live beside
this package (:mod:`kubeprober.pacing`, :mod:`kubeprober.tasks`). Nothing here may block the
event loop, retry on its own or decide what a failure means to the caller.
"""
