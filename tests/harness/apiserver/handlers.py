"""HTTP routing for the REST API: paths to resource types, verbs to :class:`Objects` calls.

Only translation lives here (query parameters, content types, status codes, Table output);
the meaning of each write is in ``objects.py``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from . import discovery, protobuf, subresources, tables
from .errors import ApiError, invalid
from .objects import Objects
from .resources import ResourceType
from .selectors import parse_fields, parse_labels
from .watch import WatchStream


@dataclass
class Target:
    """A parsed resource path."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    watch: bool


def json_response(body: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    """Return a JSON response, with Warning headers the way the apiserver sends them."""
    resp = web.Response(text=json.dumps(body), status=status, content_type="application/json")
    for w in warnings or []:
        resp.headers.add("Warning", '299 - "' + w.replace('"', '\\"') + '"')
    return resp


def error_response(err: ApiError) -> web.Response:
    """Return a Status error response."""
    return json_response(err.status(), err.code)


class Handlers:
    """The REST endpoints of the test server."""

    def __init__(self, api: Objects, *, token: str, bookmark_interval: float) -> None:
        self.api = api
        self.token = token
        self.bookmark_interval = bookmark_interval

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Check the bearer token and turn ApiErrors into Status bodies."""
        try:
            if (
                request.path not in ("/healthz", "/readyz", "/livez")
                and request.headers.get("Authorization") != f"Bearer {self.token}"
            ):
                raise ApiError(401, "Unauthorized")
            resp: web.StreamResponse = await handler(request)
            return resp
        except ApiError as err:
            return error_response(err)

    def routes(self) -> list[web.RouteDef]:
        """Return the aiohttp route table."""
        return [
            web.get("/version", self.version),
            web.get("/healthz", self.ok),
            web.get("/readyz", self.ok),
            web.get("/livez", self.ok),
            web.get("/api", self.api_root),
            web.get("/apis", self.apis_root),
            web.get("/openapi/v3", self.openapi_root),
            web.get("/openapi/v3/{path:.*}", self.openapi_doc),
            web.get("/openapi/v2", self.openapi_v2),
            web.route("*", "/api/v1{rest:.*}", self.resource),
            web.route("*", "/apis/{group}/{version}{rest:.*}", self.resource),
            web.get("/apis/{group}", self.api_group),
        ]

    async def ok(self, request: web.Request) -> web.Response:
        """Answer health checks."""
        return web.Response(text="ok")

    async def version(self, request: web.Request) -> web.Response:
        """Answer /version."""
        return json_response(discovery.VERSION)

    async def api_root(self, request: web.Request) -> web.Response:
        """Answer /api."""
        return json_response(discovery.api_versions())

    async def apis_root(self, request: web.Request) -> web.Response:
        """Answer /apis (legacy, unaggregated discovery)."""
        return json_response(discovery.api_groups(self.api.registry))

    async def api_group(self, request: web.Request) -> web.Response:
        """Answer /apis/<group>."""
        body = discovery.api_group(self.api.registry, request.match_info["group"])
        if body is None:
            raise ApiError(404, "the server could not find the requested resource")
        return json_response(body)

    async def openapi_root(self, request: web.Request) -> web.Response:
        """Answer /openapi/v3."""
        return json_response(discovery.openapi_root(self.api.registry))

    async def openapi_doc(self, request: web.Request) -> web.Response:
        """Answer /openapi/v3/<group version>."""
        doc = discovery.openapi_doc(self.api.registry, request.match_info["path"])
        if doc is None:
            raise ApiError(404, "the server could not find the requested resource")
        return json_response(doc)

    async def openapi_v2(self, request: web.Request) -> web.Response:
        """Refuse /openapi/v2: clients fall back to server-side validation via v3."""
        raise ApiError(404, "the server could not find the requested resource")

    # -- resources ------------------------------------------------------------------------

    def _target(self, request: web.Request) -> Target | None:
        group = request.match_info.get("group", "")
        version = request.match_info.get("version", "v1")
        segs = [s for s in request.match_info["rest"].split("/") if s]
        watch = False
        if segs and segs[0] == "watch":
            watch, segs = True, segs[1:]
        ns: str | None = None
        if (
            len(segs) >= 3
            and segs[0] == "namespaces"
            and not (len(segs) == 3 and segs[2] in ("status", "finalize"))
        ):
            ns, segs = segs[1], segs[2:]
        if not segs:
            return None
        rt = self.api.registry.get(group, version, segs[0])
        if rt is None or len(segs) > 3:
            raise ApiError(404, "the server could not find the requested resource")
        if rt.namespaced and ns is None and len(segs) > 1:
            raise ApiError(404, "the server could not find the requested resource")
        if not rt.namespaced and ns is not None:
            raise ApiError(404, "the server could not find the requested resource")
        return Target(
            rt, ns, segs[1] if len(segs) > 1 else None, segs[2] if len(segs) > 2 else None, watch
        )

    async def resource(self, request: web.Request) -> web.StreamResponse:
        """Dispatch a resource request by path shape and method."""
        t = self._target(request)
        if t is None:
            group = request.match_info.get("group", "")
            body = discovery.resource_list(
                self.api.registry, group, request.match_info.get("version", "v1")
            )
            if body is None or request.method != "GET":
                raise ApiError(404, "the server could not find the requested resource")
            return json_response(body)
        q = request.query
        if t.subresource and t.subresource not in (
            "status",
            "binding",
            "scale",
            "finalize",
            "eviction",
        ):
            raise ApiError(404, "the server could not find the requested resource")
        m = request.method
        if t.name is None:
            if m == "GET":
                if t.watch or q.get("watch") in ("true", "1"):
                    return await self._watch(request, t)
                return self._list(request, t)
            if m == "POST":
                return await self._create(request, t)
            if m == "DELETE":
                return await self._delete_collection(request, t)
            raise ApiError(405, f"{m} is not supported")
        if t.subresource == "binding" and m == "POST":
            body = subresources.bind(
                self.api, t.rt, t.namespace or "", t.name, await self._body(request)
            )
            return json_response(body, 201)
        if t.subresource == "eviction" and m == "POST":
            code, _ = self.api.delete(t.rt, t.namespace or "", t.name, {})
            return json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "code": 201,
                },
                201,
            )
        if t.subresource == "scale":
            patch = await self._body(request) if m in ("PUT", "PATCH") else None
            scale = subresources.scale(self.api, t.rt, t.namespace or "", t.name, m, patch)
            return json_response(scale)
        if m == "GET":
            obj = self.api.view(t.rt, self.api.current(t.rt, t.namespace or "", t.name))
            if tables.wants_table(request.headers.get("Accept", "")):
                return json_response(
                    tables.table(
                        t.rt,
                        [obj],
                        rv=obj["metadata"]["resourceVersion"],
                        include=q.get("includeObject", "Metadata"),
                    )
                )
            return json_response(obj)
        warnings: list[str] = []
        dry = q.get("dryRun") == "All"
        validation = q.get("fieldValidation", "Warn")
        sub = "status" if t.subresource == "status" else None
        if t.subresource == "finalize" and m == "PUT":
            return json_response(
                subresources.finalize(self.api, t.rt, t.name, await self._body(request))
            )
        if m == "PUT":
            obj = self.api.update(
                t.rt,
                t.namespace or "",
                t.name,
                await self._body(request),
                subresource=sub,
                dry_run=dry,
                validation=validation,
                warnings=warnings,
            )
            return json_response(self.api.view(t.rt, obj), 200, warnings)
        if m == "PATCH":
            ct = request.headers.get("Content-Type", "")
            if ct.startswith("application/apply-patch") and not q.get("fieldManager"):
                raise invalid(
                    "PatchOptions",
                    "meta.k8s.io",
                    "",
                    [
                        (
                            "fieldManager",
                            "FieldValueRequired",
                            "Required value: is required for apply patch",
                        )
                    ],
                )
            body = await self._body(request, yaml_ok=ct.startswith("application/apply-patch"))
            existed = self.api.store.get(t.rt.key, t.namespace or "", t.name) is not None
            obj = self.api.patch(
                t.rt,
                t.namespace or "",
                t.name,
                ct,
                body,
                subresource=sub,
                dry_run=dry,
                validation=validation,
                warnings=warnings,
            )
            return json_response(self.api.view(t.rt, obj), 200 if existed else 201, warnings)
        if m == "DELETE":
            opts = await self._delete_options(request)
            code, answer = self.api.delete(
                t.rt, t.namespace or "", t.name, opts, dry_run=_dry_run(opts)
            )
            return json_response(answer, code)
        raise ApiError(405, f"{m} is not supported")

    async def _body(self, request: web.Request, *, yaml_ok: bool = False) -> Any:
        ct = request.headers.get("Content-Type", "application/json")
        raw = await request.read()
        if ct.startswith("application/vnd.kubernetes.protobuf"):
            return protobuf.decode(raw)
        try:
            if yaml_ok or "yaml" in ct:
                return yaml.safe_load(raw)
            return json.loads(raw or b"null")
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(400, f"the body of the request could not be decoded: {exc}") from exc

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if request.can_read_body:
            body = await self._body(request)
            if isinstance(body, dict):
                opts.update(body)
        q = request.query
        if "dryRun" in q:  # kubectl sends it in the body; client libraries in the query
            opts["dryRun"] = q.getall("dryRun")
        if "propagationPolicy" in q:
            opts["propagationPolicy"] = q["propagationPolicy"]
        if "gracePeriodSeconds" in q:
            opts["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
        return opts

    def _matcher(self, request: web.Request, t: Target) -> Any:
        label = parse_labels(request.query.get("labelSelector"))
        field = parse_fields(request.query.get("fieldSelector"), t.rt.selectable_fields, t.rt.kind)
        return lambda o: label(o) and field(o)

    def _list(self, request: web.Request, t: Target) -> web.Response:
        q = request.query
        match = self._matcher(request, t)
        items = [o for o in self.api.store.items(t.rt.key, t.namespace) if match(o)]
        start = ""
        if q.get("continue"):
            try:
                start = json.loads(base64.urlsafe_b64decode(q["continue"]))["start"]
            except (ValueError, KeyError) as exc:
                raise ApiError(400, "continue key is not valid") from exc
            items = [o for o in items if _pos(o) > start]
        cont = ""
        remaining = None
        limit = int(q.get("limit") or 0)
        if limit and len(items) > limit:
            remaining = len(items) - limit
            items = items[:limit]
            cont = base64.urlsafe_b64encode(
                json.dumps({"start": _pos(items[-1])}).encode()
            ).decode()
        rv = self.api.store.version(self.api.store.rv)
        views = [self.api.view(t.rt, o) for o in items]
        if tables.wants_table(request.headers.get("Accept", "")):
            return json_response(
                tables.table(
                    t.rt, views, rv=rv, cont=cont, include=q.get("includeObject", "Metadata")
                )
            )
        meta: dict[str, Any] = {"resourceVersion": rv}
        if cont:
            meta["continue"] = cont
            meta["remainingItemCount"] = remaining
        return json_response(
            {
                "kind": f"{t.rt.kind}List",
                "apiVersion": t.rt.api_version,
                "metadata": meta,
                "items": views,
            }
        )

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        match = self._matcher(request, t)
        stream = WatchStream(
            self.api,
            t.rt,
            as_table=tables.wants_table(request.headers.get("Accept", "")),
            bookmark_interval=self.bookmark_interval,
        )
        return await stream.serve(
            request, namespace=t.namespace, match=match, params=dict(request.query)
        )

    async def _create(self, request: web.Request, t: Target) -> web.Response:
        q = request.query
        warnings: list[str] = []
        obj = self.api.create(
            t.rt,
            t.namespace or "",
            await self._body(request),
            dry_run=q.get("dryRun") == "All",
            validation=q.get("fieldValidation", "Warn"),
            warnings=warnings,
        )
        return json_response(self.api.view(t.rt, obj), 201, warnings)

    async def _delete_collection(self, request: web.Request, t: Target) -> web.Response:
        match = self._matcher(request, t)
        opts = await self._delete_options(request)
        gone = []
        for o in list(self.api.store.items(t.rt.key, t.namespace)):
            if match(o):
                _, _answer = self.api.delete(
                    t.rt,
                    o["metadata"].get("namespace", ""),
                    o["metadata"]["name"],
                    opts,
                    dry_run=_dry_run(opts),
                )
                gone.append(self.api.view(t.rt, o))
        return json_response(
            {
                "kind": f"{t.rt.kind}List",
                "apiVersion": t.rt.api_version,
                "metadata": {"resourceVersion": self.api.store.version(self.api.store.rv)},
                "items": gone,
            }
        )


def _pos(o: dict[str, Any]) -> str:
    return f"{o['metadata'].get('namespace', '')}/{o['metadata']['name']}"


def _dry_run(delete_options: dict[str, Any]) -> bool:
    """Tell whether a delete only pretends: ``dryRun: [All]`` in its DeleteOptions or query."""
    return "All" in (delete_options.get("dryRun") or [])
