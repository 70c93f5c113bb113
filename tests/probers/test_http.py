"""The ``http`` prober against a real aiohttp app on loopback, plain and over TLS."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from kubeprober.probers import http
from kubeprober.probers.options import SpecError, parse_options
from kubeprober.probers.sdk import CheckFailed, Context, Outcome
from kubeprober.probers.status import Status
from tests.ports import free_port
from tests.probers import _http_server as app
from tests.probers._tls_certs import issue, server_context, write_ca

PATH = "spec.checks[0].with"
PASS, ERROR = Status.PASS, Status.ERROR


@dataclass(frozen=True)
class Trust:
    ca_file: str
    cert: trustme.LeafCert
    not_after: float


@pytest.fixture(scope="module")
def trust(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trust]:
    ca = trustme.CA()
    cert, not_after = issue(ca, "127.0.0.1", "localhost")
    yield Trust(write_ca(ca, tmp_path_factory.mktemp("http")), cert, not_after)


@pytest.fixture
async def served(trust: Trust) -> AsyncIterator[app.Served]:
    async with app.serve(server_context(trust.cert)) as urls:
        yield urls


async def run(options: dict[str, Any], *, io_timeout: float = 5.0) -> tuple[Outcome, Context]:
    """Parse ``options`` as a manifest would and probe, as the runner does."""
    spec = parse_options(http.Spec, options, PATH)
    ctx = Context("default", "probe", "check", timeout=io_timeout)
    try:
        outcome = await http.probe(spec, ctx)
    except CheckFailed as exc:
        outcome = Outcome(exc.status, str(exc))
    return outcome, ctx


# id -> (with: options, {base} standing for the app's http URL; status; message fragment)
REQUEST_CASES: dict[str, tuple[dict[str, Any], Status, str]] = {
    "200 passes": ({"url": "{base}/status/200"}, PASS, "GET {base}/status/200: 200 OK"),
    "500 fails": (
        {"url": "{base}/status/500"},
        ERROR,
        'GET {base}/status/500: expected status 200-399, got 500: "status 500 from the test app"',
    ),
    "404 listed passes": ({"url": "{base}/status/404", "expectedCodes": [404]}, PASS, "404"),
    "204 unlisted fails": (
        {"url": "{base}/status/204", "expectedCodes": [200, 201]},
        ERROR,
        "expected status 200 or 201, got 204: empty body",
    ),
    "redirects followed": (
        {"url": "{base}/redirect/2", "expectedCodes": [200], "bodyRegex": "^landed$"},
        PASS,
        "200 OK",
    ),
    "redirect not followed": (
        {"url": "{base}/redirect/2", "followRedirects": False, "expectedCodes": [302]},
        PASS,
        "302 Found",
    ),
    "redirect not followed fails": (
        {"url": "{base}/redirect/1", "followRedirects": False, "expectedCodes": [200]},
        ERROR,
        "expected status 200, got 302",
    ),
    "redirect target failing is named": (
        {"url": "{base}/redirect/1", "bodyRegex": "nowhere"},
        ERROR,
        "body does not match /nowhere/ (redirected to {base}/redirect/0)",
    ),
    "maxRedirects reached": ({"url": "{base}/redirect/3", "maxRedirects": 3}, PASS, "200 OK"),
    "maxRedirects exceeded": (
        {"url": "{base}/redirect/3", "maxRedirects": 2},
        ERROR,
        "more than 2 redirects: {base}/redirect/3 -> {base}/redirect/2 -> {base}/redirect/1",
    ),
    "bodyRegex matches": ({"url": "{base}/text", "bodyRegex": r"hello \w+"}, PASS, "200 OK"),
    "bodyRegex fails": (
        {"url": "{base}/text", "bodyRegex": "goodbye"},
        ERROR,
        'body does not match /goodbye/: "hello kubeprober"',
    ),
    "expectJson matches": (
        {
            "url": "{base}/json",
            "expectJson": {
                "status": "ok",
                "data.items.0.name": "x",
                "data.items.-1.count": 2.0,
                "data.items.0.ready": True,
                "data.items.0": {"name": "x", "count": 2, "ready": True},
            },
        },
        PASS,
        "200 OK",
    ),
    "expectJson wrong value": (
        {"url": "{base}/json", "expectJson": {"status": "down"}},
        ERROR,
        'expected status = "down", got "ok"',
    ),
    "expectJson true is not 1": (
        {"url": "{base}/json", "expectJson": {"data.items.0.ready": 1}},
        ERROR,
        "expected data.items.0.ready = 1, got true",
    ),
    "expectJson index out of range": (
        {"url": "{base}/json", "expectJson": {"data.items.3.name": "x"}},
        ERROR,
        'expected data.items.3.name = "x", but data.items has only 1 items',
    ),
    "expectJson missing key": (
        {"url": "{base}/json", "expectJson": {"data.total": 1}},
        ERROR,
        'but data has no key "total"',
    ),
    "expectJson on text": (
        {"url": "{base}/text", "expectJson": {"status": "ok"}},
        ERROR,
        'response is not JSON (Expecting value: line 1 column 1 (char 0)): "hello kubeprober"',
    ),
    "headers sent": (
        {
            "url": "{base}/echo",
            "headers": {"X-Probe": "yes"},
            "expectJson": {"headers.X-Probe": "yes"},
        },
        PASS,
        "200 OK",
    ),
    "user agent": (
        {"url": "{base}/echo", "expectJson": {"headers.User-Agent": "kubeprober"}},
        PASS,
        "200 OK",
    ),
    "method and body sent": (
        {
            "url": "{base}/echo",
            "method": "PUT",
            "body": "ping",
            "expectJson": {"method": "PUT", "body": "ping"},
        },
        PASS,
        "PUT {base}/echo: 200 OK",
    ),
    "json body sent": (
        {
            "url": "{base}/echo",
            "method": "POST",
            "json": {"a": [1, "b"]},
            "expectJson": {"json.a.1": "b", "headers.Content-Type": "application/json"},
        },
        PASS,
        "200 OK",
    ),
    "HEAD": ({"url": "{base}/text", "method": "HEAD"}, PASS, "HEAD {base}/text: 200 OK"),
}


@pytest.mark.parametrize(
    ("options", "status", "message"), REQUEST_CASES.values(), ids=REQUEST_CASES.keys()
)
async def test_request(
    options: dict[str, Any], status: Status, message: str, served: app.Served
) -> None:
    outcome, ctx = await run(_fill(options, base=served.http))
    assert outcome.status == status, outcome.message
    assert message.format(base=served.http) in outcome.message
    assert "request" in ctx.phases
    if status == PASS:
        assert "body" in ctx.phases


TIMEOUT_CASES = {
    "no response": ("/slow", "GET {base}/slow: timed out after 0.3s waiting for response"),
    "body stalls": ("/slow-body", "GET {base}/slow-body: timed out after 0.3s reading the body"),
}


@pytest.mark.parametrize(("path", "message"), TIMEOUT_CASES.values(), ids=TIMEOUT_CASES.keys())
async def test_timeout_is_error(path: str, message: str, served: app.Served) -> None:
    start = time.monotonic()
    outcome, _ = await run({"url": served.http + path}, io_timeout=0.3)
    assert outcome.status == ERROR
    assert message.format(base=served.http) in outcome.message
    assert time.monotonic() - start < 2


async def test_connection_refused() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/health"
    outcome, _ = await run({"url": url})
    assert outcome.status == ERROR
    assert f"GET {url}: cannot connect to 127.0.0.1:{port}: Connection refused" in outcome.message


async def test_password_in_url_is_hidden() -> None:
    port = free_port()
    outcome, _ = await run({"url": f"http://bob:hunter2@127.0.0.1:{port}/"})
    assert "hunter2" not in outcome.message
    assert f"GET http://bob:***@127.0.0.1:{port}/" in outcome.message


# id -> (TLS options, URL host, status, message fragment)
TLS_CASES: dict[str, tuple[dict[str, Any], str, Status, str]] = {
    "trusted through caFile": ({"caFile": "{ca}"}, "127.0.0.1", PASS, "200 OK"),
    "name through localhost": ({"caFile": "{ca}"}, "localhost", PASS, "200 OK"),
    "untrusted": (
        {},
        "127.0.0.1",
        ERROR,
        "GET https://127.0.0.1:{port}/status/200: TLS certificate rejected: "
        "unable to get local issuer certificate",
    ),
    "insecureSkipVerify": ({"insecureSkipVerify": True}, "127.0.0.1", PASS, "200 OK"),
    "serverName matches": (
        {"caFile": "{ca}", "serverName": "localhost"},
        "127.0.0.1",
        PASS,
        "200 OK",
    ),
    "serverName mismatch": (
        {"caFile": "{ca}", "serverName": "shop.example"},
        "127.0.0.1",
        ERROR,
        "TLS certificate rejected: Hostname mismatch, certificate is not valid for 'shop.example'",
    ),
}


@pytest.mark.parametrize(
    ("options", "host", "status", "message"), TLS_CASES.values(), ids=TLS_CASES.keys()
)
async def test_https(
    options: dict[str, Any],
    host: str,
    status: Status,
    message: str,
    served: app.Served,
    trust: Trust,
) -> None:
    url = f"https://{host}:{served.https_port}/status/200"
    outcome, _ = await run({"url": url, **_fill(options, ca=trust.ca_file)})
    assert outcome.status == status, outcome.message
    assert message.format(port=served.https_port) in outcome.message


async def test_missing_ca_file_is_the_probes_fault(tmp_path: Path) -> None:
    spec = parse_options(
        http.Spec, {"url": "https://127.0.0.1/", "caFile": str(tmp_path / "no.pem")}, PATH
    )
    # A probe that cannot load its CA cannot tell anything: UNKNOWN, in one line.
    with pytest.raises(CheckFailed) as failed:
        await http.probe(spec, Context("default", "probe", "check", timeout=1))
    assert failed.value.status == Status.UNKNOWN
    assert str(failed.value) == f"caFile {tmp_path / 'no.pem'}: no such file or directory"


LOGIN = {
    "name": "login",
    "method": "POST",
    "url": "{base}/login",
    "json": {"user": app.USER, "password": app.PASSWORD},
    "expectedCodes": [200],
    "extract": {"token": {"json": "token"}, "rid": {"header": "X-Request-Id"}},
}
ORDERS = {
    "name": "list orders",
    "url": "{base}/orders",
    "headers": {"Authorization": "Bearer ${token}"},
    "expectedCodes": [200],
    "expectJson": {"orders.0.item": "tea"},
}
TRACE = {"name": "trace", "url": "{base}/trace/${rid}", "expectJson": {"rid": app.REQUEST_ID}}
FORM = {"url": "{base}/form", "extract": {"csrf": {"regex": 'name="csrf" value="([^"]+)"'}}}
SUBMIT = {
    "name": "submit",
    "method": "POST",
    "url": "{base}/submit",
    "headers": {"X-CSRF": "${csrf}"},
}

# id -> (steps; status; message fragment)
FLOW_CASES: dict[str, tuple[list[dict[str, Any]], Status, str]] = {
    "log in, then operate": (
        [LOGIN, ORDERS, TRACE],
        PASS,
        "3 steps passed (login, list orders, trace)",
    ),
    "regex extraction": ([FORM, SUBMIT], PASS, "2 steps passed (1, submit)"),
    "wrong password": (
        [{**LOGIN, "json": {"user": app.USER, "password": "guess"}}, ORDERS],
        ERROR,
        'step 1 "login": POST {base}/login: expected status 200, got 401: '
        '"{{\\"error\\": \\"bad credentials\\"}}"',
    ),
    "token not sent": (
        [LOGIN, {**ORDERS, "headers": {}}],
        ERROR,
        'step 2 "list orders": GET {base}/orders: expected status 200, got 401',
    ),
    "cookie missing": (
        [{**ORDERS, "headers": {"Authorization": f"Bearer {app.TOKEN}"}}],
        ERROR,
        "no session cookie",
    ),
    "value not in response": (
        [{**LOGIN, "extract": {"token": {"json": "access_token"}}}, ORDERS],
        ERROR,
        'step 1 "login": POST {base}/login: cannot extract token from access_token: '
        'the document has no key "access_token"',
    ),
    "header not in response": (
        [{**LOGIN, "extract": {"token": {"header": "X-Token"}}}, ORDERS],
        ERROR,
        "cannot extract token: no X-Token header in the response",
    ),
    "unnamed step": (
        [FORM, {**SUBMIT, "name": "", "headers": {}}],
        ERROR,
        "step 2: POST {base}/submit: expected status 200-399, got 403",
    ),
}


@pytest.mark.parametrize(("steps", "status", "message"), FLOW_CASES.values(), ids=FLOW_CASES.keys())
async def test_flow(
    steps: list[dict[str, Any]], status: Status, message: str, served: app.Served
) -> None:
    outcome, _ = await run(_fill({"steps": steps}, base=served.http))
    assert outcome.status == status, outcome.message
    assert message.format(base=served.http) in outcome.message


async def test_flow_shares_top_level_headers(served: app.Served) -> None:
    echo = {"url": "{base}/echo", "expectJson": {"headers.X-Tenant": "blue"}}
    outcome, _ = await run(
        _fill({"headers": {"X-Tenant": "blue"}, "steps": [echo, echo]}, base=served.http)
    )
    assert outcome.status == PASS, outcome.message


# id -> (with: options; None when valid, else the error's text)
SPEC_CASES: dict[str, tuple[dict[str, Any], str | None]] = {
    "url only": ({"url": "http://shop.example/health"}, None),
    "everything": (
        {
            "url": "https://10.0.0.1:8443/api?x=1",
            "method": "POST",
            "headers": {"Accept": "application/json"},
            "json": {"q": [1, 2]},
            "expectedCodes": [200, 201],
            "bodyRegex": "ok",
            "expectJson": {"data.items.0.name": "x"},
            "insecureSkipVerify": False,
            "caFile": "/etc/ca.pem",
            "serverName": "api.example",
            "followRedirects": False,
            "maxRedirects": 3,
        },
        None,
    ),
    "steps": ({"steps": [LOGIN, ORDERS, TRACE]}, None),
    "neither url nor steps": ({}, f"{PATH}.url: set either url or steps"),
    "both url and steps": (
        {"url": "http://a/", "steps": [ORDERS]},
        f"{PATH}.url: set either url or steps",
    ),
    "not http": (
        {"url": "ftp://a/"},
        f'{PATH}.url: expected an http:// or https:// URL, got "ftp://a/"',
    ),
    "no host": (
        {"url": "http:///x"},
        f'{PATH}.url: expected an http:// or https:// URL, got "http:///x"',
    ),
    "url not a string": ({"url": 80}, f"{PATH}.url: expected a string, got 80"),
    "method unknown": (
        {"url": "http://a/", "method": "FETCH"},
        f'{PATH}.method: expected one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, got "FETCH"',
    ),
    "status out of range": (
        {"url": "http://a/", "expectedCodes": [200, 42]},
        f"{PATH}.expectedCodes[1]: expected an HTTP status 100-599, got 42",
    ),
    "status as text": (
        {"url": "http://a/", "expectedCodes": "200"},
        f'{PATH}.expectedCodes: expected a list, got "200"',
    ),
    "status not int": (
        {"url": "http://a/", "expectedCodes": ["2xx"]},
        f'{PATH}.expectedCodes[0]: expected integer, got "2xx"',
    ),
    "bad regex": (
        {"url": "http://a/", "bodyRegex": "(ok"},
        f'{PATH}.bodyRegex: invalid regular expression "(ok"',
    ),
    "empty json path": (
        {"url": "http://a/", "expectJson": {"data..x": 1}},
        f"{PATH}.expectJson.data..x: expected a dotted path",
    ),
    "body and json": (
        {"url": "http://a/", "body": "x", "json": {}},
        f"{PATH}.json: set body or json, not both",
    ),
    "header not text": (
        {"url": "http://a/", "headers": {"X-N": 5}},
        f"{PATH}.headers.X-N: expected a string, got 5",
    ),
    "maxRedirects zero": (
        {"url": "http://a/", "maxRedirects": 0},
        f"{PATH}.maxRedirects: expected integer 1-100, got 0",
    ),
    "insecure not bool": (
        {"url": "http://a/", "insecureSkipVerify": "yes"},
        f'{PATH}.insecureSkipVerify: expected true or false, got "yes"',
    ),
    "unknown option": (
        {"url": "http://a/", "expectCodes": [200]},
        f"{PATH}.expectCodes: unknown option",
    ),
    "variable outside steps": (
        {"url": "http://a/${id}"},
        f"{PATH}.url: ${{id}} is not extracted by an earlier step",
    ),
    "step without url": ({"steps": [{"name": "x"}]}, f"{PATH}.steps[0].url: required"),
    "variable used before extraction": (
        {"steps": [ORDERS, LOGIN]},
        f"{PATH}.steps[0].headers.Authorization: ${{token}} is not extracted by an earlier step",
    ),
    "variable in json body": (
        {"steps": [{"url": "http://a/", "method": "POST", "json": {"k": ["${nope}"]}}]},
        f"{PATH}.steps[0].json: ${{nope}} is not extracted by an earlier step",
    ),
    "two extraction sources": (
        {"steps": [{"url": "http://a/", "extract": {"t": {"json": "a", "header": "B"}}}]},
        f"{PATH}.steps[0].extract.t: set exactly one of json, regex, header (got 2)",
    ),
    "bad variable name": (
        {"steps": [{"url": "http://a/", "extract": {"my-token": {"json": "a"}}}]},
        f"{PATH}.steps[0].extract.my-token: expected a name of letters, digits and _",
    ),
    "bad extraction regex": (
        {"steps": [{"url": "http://a/", "extract": {"t": {"regex": "[a"}}}]},
        f'{PATH}.steps[0].extract.t.regex: invalid regular expression "[a"',
    ),
    "expectations beside steps": (
        {"expectedCodes": [200], "steps": [ORDERS]},
        f"{PATH}.expectedCodes: set it in each step when steps are given",
    ),
    "steps not a list": ({"steps": {"url": "http://a/"}}, f"{PATH}.steps: expected a list"),
}


@pytest.mark.parametrize(("options", "error"), SPEC_CASES.values(), ids=SPEC_CASES.keys())
def test_spec(options: dict[str, Any], error: str | None) -> None:
    options = _fill(options, base="http://shop.example")
    if error is None:
        spec = parse_options(http.Spec, options, PATH)
        assert spec.url == options.get("url")
        assert len(spec.steps) == len(options.get("steps", []))
        assert spec.follow_redirects == options.get("followRedirects", True)
        return
    with pytest.raises(SpecError) as info:
        parse_options(http.Spec, options, PATH)
    assert error in str(info.value)


def _fill(value: Any, **names: str) -> Any:
    """Replace ``{base}``-style placeholders in every string of a nested manifest value."""
    if isinstance(value, str):
        for key, text in names.items():
            value = value.replace("{" + key + "}", text)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, **names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, **names) for v in value]
    return value
