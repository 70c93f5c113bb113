"""The ``http`` prober: prove that a web endpoint, or a whole business flow, answers correctly.

Monitoring sees that a Service has endpoints; this prober sends real requests and checks what
comes back. With ``steps`` it logs in and then operates, as a user would, sharing cookies and
passing values (a token, an id) from one response to the next request.

``with:`` options (``kubeprober probers`` lists them with their defaults):

- ``url``, ``method``, ``headers``, ``body`` or ``json``: the one request to send.
- ``expectedCodes`` (unset: any 2xx or 3xx), ``bodyRegex``, ``expectJson`` (dotted paths such
  as ``data.items.0.name`` mapped to the value they must hold).
- ``insecureSkipVerify``, ``caFile``, ``serverName``: TLS trust for ``https://`` targets.
- ``followRedirects`` (default true) and ``maxRedirects``.
- ``steps``: instead of ``url``, requests sent in order with one cookie jar. Each takes the
  request and expectation options above plus ``name`` and ``extract``, which saves a value from
  the response (``json`` dotted path, ``regex`` group or ``header``) as a variable that later
  steps use as ``${name}`` in their url, headers and body (inserted as is, not escaped).
  Top-level ``headers`` go with every step; TLS and redirect options apply to all steps.

It never retries: a flaky endpoint must show up as failures, not be smoothed over.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import yarl

from kubeprober.probers.options import SpecError, option, shown
from kubeprober.probers.sdk import CheckFailed, Context, Outcome, reason, trusting

DESCRIPTION = "Send HTTP(S) requests, or log in and operate in steps; check codes, body and JSON."

Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

# Bodies are read for matching only; a runaway download must not bloat the agent.
_MAX_BODY = 4 * 1024 * 1024
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_USER_AGENT = "kubeprober"


@dataclass(frozen=True)
class Extract:
    """Where one variable's value comes from: exactly one of ``json``, ``regex``, ``header``."""

    json: str | None = option("dotted path into the JSON body, like data.token", default=None)
    regex: str | None = option(
        "regular expression on the body; saves group 1, or the whole match without groups",
        default=None,
    )
    header: str | None = option("response header whose value is saved", default=None)

    def __post_init__(self) -> None:
        given = [k for k in ("json", "regex", "header") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of json, regex, header (got {len(given)})")
        if self.regex is not None:
            _check_regex(self.regex, "regex")


@dataclass(frozen=True, kw_only=True)
class _Request:
    """The options one request and its expectations share, at the top level and in steps."""

    method: Method = option("HTTP method", default="GET")
    url: str | None = option(
        "http:// or https:// URL to request (at the top level: this or steps)", default=None
    )
    headers: dict[str, str] = option("request headers", default_factory=dict)
    body: str | None = option("request body, sent as is", default=None)
    json_body: Any = option("request body as JSON (sets Content-Type)", default=None, key="json")
    expected_codes: tuple[int, ...] = option(
        "status codes that pass; unset means any 200-399", default=()
    )
    body_regex: str | None = option("regular expression the body must match", default=None)
    expect_json: dict[str, Any] = option(
        "dotted JSON paths (data.items.0.name) and the values they must hold",
        default_factory=dict,
    )

    def __post_init__(self) -> None:
        if self.body is not None and self.json_body is not None:
            raise SpecError("json", "set body or json, not both")
        for i, code in enumerate(self.expected_codes):
            if not 100 <= code <= 599:
                raise SpecError(
                    f"expectedCodes[{i}]", f"expected an HTTP status 100-599, got {code}"
                )
        if self.body_regex is not None:
            _check_regex(self.body_regex, "bodyRegex")
        for path in self.expect_json:
            if not path or "" in path.split("."):
                raise SpecError(
                    f"expectJson.{path}", "expected a dotted path like data.items.0.name"
                )
        if self.url is not None and not _VARIABLE.search(self.url):
            _check_url(self.url)


@dataclass(frozen=True, kw_only=True)
class Step(_Request):
    """One request of a multi-step flow."""

    name: str = option("what the step does, named in failures", default="")
    extract: dict[str, Extract] = option(
        "variables to save from the response, used as ${name} by later steps",
        default_factory=dict,
    )

    def __post_init__(self) -> None:
        if self.url is None:
            raise SpecError("url", "required")
        super().__post_init__()
        for var in self.extract:
            if not _NAME.match(var):
                raise SpecError(f"extract.{var}", "expected a name of letters, digits and _")


@dataclass(frozen=True, kw_only=True)
class Spec(_Request):
    """Options of the ``http`` prober."""

    steps: tuple[Step, ...] = option("requests sent in order instead of url", default=())
    insecure_skip_verify: bool = option("accept any TLS certificate", default=False)
    ca_file: str | None = option(
        "PEM file of CA certificates trusted besides the system's", default=None
    )
    server_name: str | None = option(
        "TLS server name (SNI and certificate check) when the URL's host differs", default=None
    )
    follow_redirects: bool = option("follow 3xx redirects", default=True)
    max_redirects: int = option(
        "redirects followed before failing", default=10, minimum=1, maximum=100
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.url is None) == (not self.steps):
            raise SpecError("url", "set either url or steps, not both and not neither")
        _check_variables(self, "", defined=set())
        if not self.steps:
            return
        per_step = {
            "method": self.method != "GET",
            "body": self.body is not None,
            "json": self.json_body is not None,
            "expectedCodes": bool(self.expected_codes),
            "bodyRegex": self.body_regex is not None,
            "expectJson": bool(self.expect_json),
        }
        for key, given in per_step.items():
            if given:
                raise SpecError(key, "set it in each step when steps are given")
        defined: set[str] = set()
        for i, step in enumerate(self.steps):
            _check_variables(step, f"steps[{i}].", defined=defined)
            defined.update(step.extract)


def _check_regex(pattern: str, path: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise SpecError(path, f"invalid regular expression {shown(pattern)}: {exc}") from None


def _check_url(url: str) -> None:
    try:
        parsed = yarl.URL(url)
    except ValueError as exc:
        raise SpecError("url", f"invalid URL {shown(url)}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise SpecError("url", f"expected an http:// or https:// URL, got {shown(url)}")


def _check_variables(req: _Request, prefix: str, *, defined: set[str]) -> None:
    """Reject ``${name}`` uses that no earlier step extracts: better at load than at 3 a.m."""
    places: list[tuple[str, object]] = [
        ("url", req.url),
        ("body", req.body),
        ("json", req.json_body),
    ]
    places += [(f"headers.{k}", v) for k, v in req.headers.items()]
    for path, value in places:
        for text in _strings(value):
            for name in _VARIABLE.findall(text):
                if name not in defined:
                    raise SpecError(
                        prefix + path, f"${{{name}}} is not extracted by an earlier step"
                    )


def _strings(value: object) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


@dataclass(frozen=True)
class Response:
    """What one exchange returned, read in full (up to _MAX_BODY) and released."""

    status: int
    reason: str
    redirected_to: str | None
    headers: Mapping[str, str]
    text: str


@dataclass(frozen=True)
class _Prepared:
    """One request with the variables of earlier steps filled in."""

    method: str
    url: str
    headers: dict[str, str]
    body: str | None
    json_body: Any


async def probe(spec: Spec, ctx: Context) -> Outcome:
    """Send the request (or each step in order) and check every response."""
    deadline = asyncio.get_running_loop().time() + ctx.timeout
    tls = _ssl_context(spec)
    steps: tuple[_Request, ...] = spec.steps or (spec,)
    variables: dict[str, str] = {}
    last = ""
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True),  # unsafe: keep cookies of IP-addressed hosts
        timeout=aiohttp.ClientTimeout(),  # our deadline bounds every step; aiohttp's would not
        headers={"User-Agent": _USER_AGENT, **spec.headers},
    ) as session:
        for i, req in enumerate(steps, 1):
            label = ""
            if isinstance(req, Step):
                label = f"step {i} {json.dumps(req.name)}: " if req.name else f"step {i}: "
            url = _substitute(req.url or "", variables)
            what = f"{req.method} {_shown_url(url)}"
            try:
                resp = await _exchange(
                    session,
                    _Prepared(
                        method=req.method,
                        url=url,
                        headers={k: _substitute(v, variables) for k, v in req.headers.items()},
                        body=None if req.body is None else _substitute(req.body, variables),
                        json_body=_substitute_json(req.json_body, variables),
                    ),
                    spec=spec,
                    tls=tls,
                    ctx=ctx,
                    deadline=deadline,
                )
                _expect(req, resp)
                if isinstance(req, Step):
                    variables.update(_extract(req, resp))
            except CheckFailed as exc:
                raise CheckFailed(f"{label}{what}: {exc}") from None
            last = f"{resp.status} {resp.reason}".strip()
    if spec.steps:
        names = ", ".join(s.name or str(i) for i, s in enumerate(spec.steps, 1))
        return Outcome.passed(f"{len(spec.steps)} steps passed ({names})")
    return Outcome.passed(f"{spec.method} {_shown_url(spec.url or '')}: {last}")


async def fetch(spec: Spec, ctx: Context) -> Response:
    """Send ``spec``'s one request, check it as :func:`probe` does, and return the response.

    For probers that read something from an HTTP API; failures raise CheckFailed.
    """
    deadline = asyncio.get_running_loop().time() + ctx.timeout
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(), headers={"User-Agent": _USER_AGENT, **spec.headers}
    ) as session:
        resp = await _exchange(
            session,
            _Prepared(spec.method, spec.url or "", {}, spec.body, spec.json_body),
            spec=spec,
            tls=_ssl_context(spec),
            ctx=ctx,
            deadline=deadline,
        )
    _expect(spec, resp)
    return resp


async def _exchange(
    session: aiohttp.ClientSession,
    req: _Prepared,
    *,
    spec: Spec,
    tls: ssl.SSLContext | bool,
    ctx: Context,
    deadline: float,
) -> Response:
    """Send one request and read its body, translating transport failures to CheckFailed."""
    stage = "waiting for response"
    try:
        async with asyncio.timeout_at(deadline):
            with ctx.phase("request"):
                resp = await session.request(
                    req.method,
                    req.url,
                    headers=req.headers,
                    data=None if req.body is None else req.body.encode(),
                    json=req.json_body,
                    allow_redirects=spec.follow_redirects,
                    # aiohttp fails on the Nth redirect response; we promise N followed hops
                    max_redirects=spec.max_redirects + 1,
                    ssl=tls,
                    server_hostname=spec.server_name,
                )
            try:
                stage = "reading the body"
                with ctx.phase("body"):
                    raw = await _read_capped(resp)
            finally:
                resp.release()
    except TimeoutError:
        raise CheckFailed(f"timed out after {ctx.timeout:g}s {stage}") from None
    except aiohttp.ClientConnectorCertificateError as exc:
        raise CheckFailed(f"TLS certificate rejected: {reason(exc.certificate_error)}") from None
    except aiohttp.ClientSSLError as exc:
        raise CheckFailed(f"TLS handshake failed: {reason(exc.os_error)}") from None
    except aiohttp.ClientConnectorDNSError as exc:
        raise CheckFailed(
            f"cannot resolve {exc.host}: {exc.os_error.strerror or exc.os_error}"
        ) from None
    except aiohttp.ClientConnectorError as exc:
        raise CheckFailed(
            f"cannot connect to {exc.host}:{exc.port}: {reason(exc.os_error)}"
        ) from None
    except aiohttp.TooManyRedirects as exc:
        hops = " -> ".join(_shown_url(str(r.url)) for r in exc.history)
        raise CheckFailed(f"more than {spec.max_redirects} redirects: {hops} -> ...") from None
    except aiohttp.ServerDisconnectedError:
        raise CheckFailed(f"server closed the connection {stage}") from None
    except aiohttp.ClientError as exc:
        raise CheckFailed(f"{stage}: {type(exc).__name__}: {exc}") from None
    return Response(
        status=resp.status,
        reason=resp.reason or "",
        redirected_to=str(resp.url) if resp.history else None,
        headers=resp.headers,
        text=_decode(raw, resp.charset),
    )


def _ssl_context(spec: Spec) -> ssl.SSLContext | bool:
    """Build the TLS trust the spec asks for; True means aiohttp's cached default."""
    if not spec.ca_file and not spec.insecure_skip_verify:
        return True
    context = trusting(spec.ca_file)
    if spec.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size >= _MAX_BODY:
            break
    return b"".join(chunks)[:_MAX_BODY]


def _decode(raw: bytes, charset: str | None) -> str:
    try:
        codec = codecs.lookup(charset or "utf-8").name
    except LookupError:
        codec = "utf-8"
    return raw.decode(codec, errors="replace")


def _expect(req: _Request, resp: Response) -> None:
    """Raise CheckFailed naming expected and actual when the response is not what req wants."""
    redirected = ""
    if resp.redirected_to is not None:
        redirected = f" (redirected to {_shown_url(resp.redirected_to)})"
    codes = req.expected_codes
    ok = resp.status in codes if codes else 200 <= resp.status <= 399
    if not ok:
        want = _codes_text(codes)
        raise CheckFailed(
            f"expected status {want}, got {resp.status}{redirected}: {_snippet(resp.text)}"
        )
    if req.body_regex is not None and not re.search(req.body_regex, resp.text):
        raise CheckFailed(
            f"body does not match /{req.body_regex}/{redirected}: {_snippet(resp.text)}"
        )
    if req.expect_json:
        doc = json_of(resp)
        for path, want in req.expect_json.items():
            try:
                got = lookup(doc, path)
            except LookupError as exc:
                raise CheckFailed(f"expected {path} = {shown(want)}, but {exc}") from None
            if not _same(want, got):
                raise CheckFailed(f"expected {path} = {shown(want)}, got {shown(got)}")


def _codes_text(codes: tuple[int, ...]) -> str:
    if not codes:
        return "200-399"
    if len(codes) == 1:
        return str(codes[0])
    return ", ".join(str(c) for c in codes[:-1]) + f" or {codes[-1]}"


def _extract(step: Step, resp: Response) -> dict[str, str]:
    """Return the variables ``step`` saves from ``resp``."""
    found: dict[str, str] = {}
    for var, how in step.extract.items():
        value: str | None
        if how.header is not None:
            value = resp.headers.get(how.header)
            if value is None:
                raise CheckFailed(f"cannot extract {var}: no {how.header} header in the response")
        elif how.regex is not None:
            match = re.search(how.regex, resp.text)
            if match is None:
                raise CheckFailed(f"cannot extract {var}: body does not match /{how.regex}/")
            value = match.group(1) if match.re.groups else match.group(0)
        else:
            try:
                got = lookup(json_of(resp), how.json or "")
            except LookupError as exc:
                raise CheckFailed(f"cannot extract {var} from {how.json}: {exc}") from None
            value = got if isinstance(got, str) else json.dumps(got)
        found[var] = value
    return found


def json_of(resp: Response) -> Any:
    """Parse the body as JSON; CheckFailed shows the start of a body that is not."""
    try:
        return json.loads(resp.text)
    except ValueError as exc:
        raise CheckFailed(f"response is not JSON ({exc}): {_snippet(resp.text)}") from None


def lookup(doc: Any, path: str) -> Any:
    """Follow a dotted path (``data.items.0.name``) into parsed JSON; LookupError says where."""
    node = doc
    parts = path.split(".")
    for i, part in enumerate(parts):
        walked = ".".join(parts[:i]) or "the document"
        if isinstance(node, dict):
            if part not in node:
                raise LookupError(f"{walked} has no key {shown(part)}")
            node = node[part]
        elif isinstance(node, list):
            try:
                node = node[int(part)]
            except ValueError:
                raise LookupError(f"{walked} is a list, and {shown(part)} is no index") from None
            except IndexError:
                raise LookupError(f"{walked} has only {len(node)} items") from None
        else:
            raise LookupError(f"{walked} is {shown(node)}, not an object or list")
    return node


def _same(want: Any, got: Any) -> bool:
    """Compare JSON values as JSON does: true is not 1, but 1 is 1.0."""
    if isinstance(want, bool) or isinstance(got, bool):
        return type(want) is type(got) and want == got
    if isinstance(want, dict) and isinstance(got, dict):
        return want.keys() == got.keys() and all(_same(v, got[k]) for k, v in want.items())
    if isinstance(want, list | tuple) and isinstance(got, list):
        return len(want) == len(got) and all(_same(w, g) for w, g in zip(want, got, strict=True))
    return bool(want == got)


def _substitute(text: str, variables: Mapping[str, str]) -> str:
    return _VARIABLE.sub(lambda m: variables.get(m.group(1), m.group(0)), text)


def _substitute_json(value: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _substitute(value, variables)
    if isinstance(value, Mapping):
        return {k: _substitute_json(v, variables) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_substitute_json(v, variables) for v in value]
    return value


def _snippet(text: str) -> str:
    """The start of a body on one line, quoted: enough for a human to see what came back."""
    flat = " ".join(text.split())
    if not flat:
        return "empty body"
    return json.dumps(flat[:120] + "..." if len(flat) > 120 else flat, ensure_ascii=False)


def _shown_url(url: str) -> str:
    """Hide a password in the URL: messages end up in logs, metrics and dashboards."""
    try:
        parsed = yarl.URL(url)
    except ValueError:
        return url
    return str(parsed.with_password("***")) if parsed.password else url
