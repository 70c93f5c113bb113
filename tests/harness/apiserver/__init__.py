"""An in-process stand-in for kube-apiserver plus the controller-manager work tests rely on.

It exists because no real API server can run in CI here. Everything a test may observe goes
through the public HTTP API, so the same tests also pass against a real cluster. See
``tests/harness/README.md`` for what it does and does not do.
"""
