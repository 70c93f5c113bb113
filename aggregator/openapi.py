"""The aggregator's HTTP API described as OpenAPI 3, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from kubeprober import __version__
from kubeprober.probers.probe import LAYERS
from kubeprober.probers.status import Status

# null: no check has a result yet (pending), or there is none.
_STATUS_OR_NULL = {"allOf": [{"$ref": "#/components/schemas/Status"}], "nullable": True}
_SUMMARY = {
    "type": "object",
    "required": ["status", "total", "pending", "byStatus"],
    "properties": {
        "status": _STATUS_OR_NULL,
        "total": {"type": "integer"},
        "pending": {"type": "integer", "description": "checks without a result yet"},
        "byStatus": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
}
_TIME = {"type": "string", "format": "date-time", "nullable": True}
_CHECK = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "status": _STATUS_OR_NULL,
        "pending": {"type": "boolean", "description": "no result yet (status null)"},
        "message": {"type": "string"},
        "lastRun": _TIME,
        "durationSeconds": {"type": "number", "nullable": True},
        "consecutiveFailures": {"type": "integer"},
        "lastTransitionTime": _TIME,
        "history": {
            "type": "array",
            "description": "only with history=1: the last results, at most 20, oldest first",
            "items": {
                "type": "object",
                "properties": {
                    "startedAt": _TIME,
                    "status": {"$ref": "#/components/schemas/Status"},
                    "durationSeconds": {"type": "number"},
                    "message": {"type": "string"},
                },
            },
        },
    },
}
_PROBE = {
    "type": "object",
    "properties": {
        "namespace": {"type": "string"},
        "name": {"type": "string"},
        "layer": {"$ref": "#/components/schemas/Layer"},
        "status": _STATUS_OR_NULL,
        "message": {"type": "string"},
        "lastRun": _TIME,
        "nextRun": _TIME,
        "stale": {"type": "boolean"},
        "configError": {"$ref": "#/components/schemas/ConfigError"},
        "checks": {"type": "array", "items": {"$ref": "#/components/schemas/Check"}},
        "targets": {
            "type": "array",
            "description": "checks with targets: each target is listed in checks as "
            "<check>/<target>",
            "items": {
                "type": "object",
                "properties": {
                    "check": {"type": "string"},
                    "total": {"type": "integer", "description": "targets run"},
                    "leftOut": {"type": "integer", "description": "targets beyond the cap"},
                    "message": {"type": "string", "description": "why there are none"},
                },
            },
        },
    },
}
_LAYERS: list[str] = list(LAYERS)
_STATUSES = [s.value for s in Status]
_CLUSTER = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "displayName": {"type": "string"},
        "state": {"type": "string", "enum": ["Online", "Offline", "Pending"]},
        "maintenance": {"type": "boolean"},
        "stale": {
            "type": "boolean",
            "description": "Kubernetes mode, only when true: the replica holding this cluster "
            "did not answer in time (or none holds it), so the entry comes from the Cluster "
            "status, without probes",
        },
        "lastSeen": _TIME,
        "agentVersion": {"type": "string", "nullable": True},
        "kubernetesVersion": {"type": "string", "nullable": True},
        "nodeCount": {"type": "integer", "nullable": True},
        "assignmentRevision": {"type": "integer", "nullable": True},
        "apiProxy": {"type": "string", "enum": ["off", "read", "write"], "nullable": True},
        "summary": {"$ref": "#/components/schemas/Summary"},
        "layers": {
            "type": "object",
            "properties": {k: {"$ref": "#/components/schemas/Summary"} for k in _LAYERS},
        },
        "configErrors": {"type": "array", "items": {"$ref": "#/components/schemas/ConfigError"}},
        "probes": {"type": "array", "items": {"$ref": "#/components/schemas/Probe"}},
    },
}
_CONFIG_ERROR = {
    "type": "object",
    "nullable": True,
    "description": "A probe file, or a Probe in it, that did not load; what ran keeps running",
    "properties": {"file": {"type": "string"}, "message": {"type": "string"}},
}
_TEXT = {"content": {"text/plain": {"schema": {"type": "string"}}}}
_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_KUBE_STATUS = {
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/KubeStatus"}}}
}


def _forwarded(bound: str) -> str:
    """How an operation only the cluster's holder can answer is passed to it (api.py and
    kube_proxy.py, through kube/peers.py); ``bound`` is the holder's own bound on it."""
    return (
        "Kubernetes mode: a replica that does not hold the cluster's tunnel passes the "
        "request, with the caller's token, to the live replica that does (marked "
        "`X-Kubeprober-Forwarded: 1`, never passed on again) and answers with its answer. "
        "If that replica gives no usable answer (its address refuses, it sends no answer "
        f"within {bound} plus 5 s, or it answers a 5xx that is not JSON) the answer is a 502 "
        "whose message names the cluster and the replica; a timeout is a 502 too, never a "
        "504, as when the cluster's own agent does not answer."
    )


# Reads are open without a read token ({}), else need it or an operator token.
_READ: list[dict[str, list[str]]] = [{}, {"readToken": []}, {"operatorToken": []}]


def _csv(
    name: str, what: str, *, values: list[str] | None = None, anycase: bool = False
) -> dict[str, Any]:
    """A comma-separated query parameter; with ``values``, of those only (empty items too)."""
    schema: dict[str, Any] = {"type": "string"}
    if values is not None:
        spelled = ["".join(f"[{c}{c.lower()}]" for c in v) if anycase else v for v in values]
        one = "(" + "|".join(spelled) + ")?"
        schema["pattern"] = f"^{one}(,{one})*$"
    return {"name": name, "in": "query", "required": False, "description": what, "schema": schema}


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "kubeprober aggregator",
        "version": __version__,
        "description": "One view of every cluster's probes. Reads (/status, /metrics) need "
        "the read token or an operator token when the aggregator has a read token; running "
        "probes always needs an operator token (--operator-tokens). The scheme name is "
        "case-insensitive; 401 says `token required` or `invalid token`.",
    },
    "paths": {
        "/status": {
            "get": {
                "summary": "Unified status of every cluster",
                "description": "Summaries always cover whole clusters; filters narrow the "
                "lists. history=1 is answered by the replica holding the cluster. "
                + _forwarded("the pull timeout"),
                "parameters": [
                    _csv("cluster", "comma-separated cluster names"),
                    _csv(
                        "status",
                        "comma-separated statuses of the probes listed, in any case (an "
                        "offline cluster's stale probes are UNKNOWN)",
                        values=_STATUSES,
                        anycase=True,
                    ),
                    _csv("layer", "comma-separated layers of the probes listed", values=_LAYERS),
                    {
                        "name": "history",
                        "in": "query",
                        "required": False,
                        "description": "1: with exactly one cluster, ask its agent now for "
                        "that cluster alone, each check with its recent history",
                        "schema": {"type": "string", "enum": ["1"]},
                    },
                    {
                        "name": "held",
                        "in": "query",
                        "required": False,
                        "description": "1: only the clusters this replica holds (in file "
                        "mode, every cluster), without asking the other replicas, as "
                        "application/x-ndjson: one cluster entry a line, by name (what "
                        "replicas ask each other)",
                        "schema": {"type": "string", "enum": ["1"]},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "the document",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/FleetStatus"}
                            },
                            "application/x-ndjson": {
                                "schema": {
                                    "type": "string",
                                    "description": "held=1: each line one item of "
                                    "FleetStatus.clusters",
                                }
                            },
                        },
                    },
                    "400": {
                        "description": "a filter value is unknown, or history=1 without "
                        "exactly one cluster"
                    },
                    "401": {"description": "token required, or invalid token"},
                    "404": {"description": "a cluster that is not defined"},
                    "502": {
                        "description": "history=1: the agent did not answer, or (Kubernetes "
                        "mode) the replica holding the cluster gave no usable answer",
                        **_ERROR,
                    },
                    "503": {
                        "description": "history=1: the cluster is not connected, or "
                        "--max-history-requests histories are being fetched (Retry-After)"
                    },
                },
                "security": _READ,
            }
        },
        "/metrics": {
            "get": {
                "summary": "Federated metrics: every agent's series with a cluster label",
                "parameters": [
                    {
                        "name": "match[]",
                        "in": "query",
                        "required": False,
                        "description": "series selectors, as Prometheus /federate takes",
                        "schema": {"type": "array", "items": {"type": "string"}},
                        "style": "form",
                        "explode": True,
                    }
                ],
                "responses": {
                    "200": {"description": "Prometheus text format 0.0.4", **_TEXT},
                    "400": {"description": "a selector cannot be parsed"},
                    "401": {"description": "token required, or invalid token"},
                },
                "security": _READ,
            }
        },
        "/api/v1/clusters/{cluster}/probes/{namespace}/{name}/run": {
            "post": {
                "summary": "Run a probe now on a cluster, through its tunnel",
                "description": _forwarded("300 s"),
                "parameters": [
                    {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                    for n in ("cluster", "namespace", "name")
                ],
                "responses": {
                    "200": {
                        "description": "the probe's results",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Probe"}}
                        },
                    },
                    "401": {"description": "operator token required, or invalid token"},
                    "403": {
                        "description": "the read token was given, or the aggregator has no "
                        "--operator-tokens (running probes is off)"
                    },
                    "404": {"description": "no such cluster or probe"},
                    "502": {
                        "description": "the agent did not answer within 300 s, or (Kubernetes "
                        "mode) the replica holding the cluster gave no usable answer",
                        **_ERROR,
                    },
                    "503": {"description": "the cluster is not connected"},
                },
                "security": [{"operatorToken": []}],
            }
        },
        "/api/v1/clusters/{cluster}/kube/{path}": {
            method: {
                "summary": "The cluster's Kubernetes API at /{path}, through its agent "
                "(kubectl with `kubeprober kubeconfig`); any method, the agent decides",
                "description": _forwarded("the 75 s the agent has for the head")
                + " Only the head has a deadline: a watch may then be quiet for long.",
                "parameters": [
                    {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                    for n in ("cluster", "path")
                ],
                "responses": {
                    "200": {"description": "the API server's answer, streamed (watches too)"},
                    "401": {"description": "operator token required, or invalid token"},
                    "403": {
                        "description": "a Kubernetes Status: the read token was given, the "
                        "agent runs without --accept-api-proxy, a write without "
                        "--api-proxy-write, an Impersonate-* header or a connection upgrade"
                    },
                    "404": {"description": "no such cluster"},
                    "502": {
                        "description": "the agent or its API server did not answer, or "
                        "(Kubernetes mode) the replica holding the cluster gave no usable answer",
                        **_KUBE_STATUS,
                    },
                    "503": {"description": "the cluster is not connected"},
                },
                "security": [{"operatorToken": []}],
            }
            for method in ("get", "post", "put", "patch", "delete")
        },
        "/api/v1/tunnel": {
            "get": {
                "summary": "Agents' reverse tunnel (WebSocket, subprotocol kubeprober.v1)",
                "description": "Agents only; `Authorization: Bearer kp1.<cluster>.<secret>`.",
                "responses": {
                    "101": {"description": "upgraded"},
                    "401": {"description": "unknown or wrong token"},
                    "503": {"description": "too many handshakes; see Retry-After"},
                },
                "security": [{"agentToken": []}],
            }
        },
        "/": {
            "get": {
                "summary": "HTML status board",
                "responses": {"200": {"description": "the page"}},
            }
        },
        "/board/{name}": {
            "get": {
                "summary": "One of the board page's static files (its script and style)",
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "v",
                        "in": "query",
                        "required": False,
                        "description": "the file's current hash: the answer is immutable",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {"description": "the file"},
                    "304": {"description": "unchanged (If-None-Match)"},
                    "404": {"description": "no such file", **_TEXT},
                },
            }
        },
        "/healthz": {
            "get": {"summary": "Liveness", "responses": {"200": {"description": "ok", **_TEXT}}}
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: the cluster registry is loaded",
                "responses": {
                    "200": {"description": "ok", **_TEXT},
                    "503": {"description": "not ready", **_TEXT},
                },
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3"}}}
        },
    },
    "components": {
        "securitySchemes": {
            "agentToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "a cluster's token kp1.<cluster>.<secret>: the tunnel only",
            },
            "readToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "the aggregator's --read-token-file, when it has one",
            },
            "operatorToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "a token whose sha256 is in --operator-tokens, named there; "
                "it also reads",
            },
        },
        "schemas": {
            "Status": {"type": "string", "enum": _STATUSES},
            "Layer": {"type": "string", "enum": _LAYERS},
            "Summary": _SUMMARY,
            "Check": _CHECK,
            "Probe": _PROBE,
            "ConfigError": _CONFIG_ERROR,
            "Cluster": _CLUSTER,
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "string",
                        "description": "what went wrong, starting `cluster NAME:`; when the "
                        "replica holding it failed, that replica's identity and address",
                    }
                },
            },
            "KubeStatus": {
                "type": "object",
                "description": "a Kubernetes Status (meta/v1), as kubectl shows it",
                "required": ["kind", "apiVersion", "status", "message", "reason", "code"],
                "properties": {
                    "kind": {"type": "string", "enum": ["Status"]},
                    "apiVersion": {"type": "string", "enum": ["v1"]},
                    "metadata": {"type": "object"},
                    "status": {"type": "string", "enum": ["Failure"]},
                    "message": {"type": "string"},
                    "reason": {"type": "string"},
                    "code": {"type": "integer"},
                },
            },
            "FleetStatus": {
                "type": "object",
                "properties": {
                    "generatedAt": _TIME,
                    "summary": {"$ref": "#/components/schemas/Summary"},
                    "clusters": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/Cluster"},
                    },
                },
            },
        },
    },
}
