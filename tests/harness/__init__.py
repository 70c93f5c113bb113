"""The Kubernetes test harness: API test server, cluster simulator, fault proxy, fixtures.

See README.md in this directory for what each part does and does not do.
"""
