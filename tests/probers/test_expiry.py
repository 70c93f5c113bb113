"""The ``expiry`` prober: dates from a JSON API on loopback and from Kubernetes objects."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from kubernetes import client

from kubeprober.exporter.kube.access import CheckApi
from kubeprober.probers import expiry
from kubeprober.probers.options import SpecError, parse_options
from kubeprober.probers.sdk import Outcome
from kubeprober.probers.status import Status
from tests.probers._probe import probe

DAY = 86400.0


def in_days(days: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)


def day_of(days: float) -> str:
    return in_days(days).strftime("%Y-%m-%d")


async def licence(request: web.Request) -> web.Response:
    """Answer ``{"data": {"expires": ...}}``, the date spelled as the path asks."""
    spelling, days = request.match_info["spelling"], float(request.match_info["days"])
    when = in_days(days)
    value: Any = {
        "iso": when.isoformat().replace("+00:00", "Z"),
        "unix": when.timestamp(),
        "custom": when.strftime("%d-%b-%Y %H:%M"),
        "garbage": "next tuesday",
    }[spelling]
    return web.json_response({"data": {"expires": value}})


async def broken(request: web.Request) -> web.Response:
    return web.Response(status=500, text="licence server down")


@pytest_asyncio.fixture
async def api_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/licence/{spelling}/{days}", licence)
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("path", "extra", "status", "message"),
    [
        ("iso/100.5", {}, Status.PASS, "{where} expires on {day}, in 100 days"),
        ("unix/100.5", {}, Status.PASS, "{where} expires on {day}, in 100 days"),
        (
            "custom/100.5",
            {"format": "%d-%b-%Y %H:%M", "what": "the licence"},
            Status.PASS,
            "the licence expires on {day}, in 100 days",
        ),
        (
            "iso/10.5",
            {},
            Status.WARN,
            "{where} expires on {day}, in 10 days (warnDays 30): renew it",
        ),
        (
            "iso/2.5",
            {"errorDays": 7},
            Status.ERROR,
            "{where} expires on {day}, in 2 days (errorDays 7): renew it now",
        ),
        ("iso/-3.5", {}, Status.ERROR, "{where} expired on {day} (3 days ago)"),
        (
            "garbage/0",
            {},
            Status.UNKNOWN,
            '{where} is "next tuesday", not an RFC 3339 date or Unix seconds',
        ),
    ],
    ids=["iso", "unix", "custom format", "warn", "error days", "expired", "not a date"],
)
async def test_date_from_a_json_api(
    api_url: str, path: str, extra: dict[str, Any], status: Status, message: str
) -> None:
    url = f"{api_url}/licence/{path}"
    outcome, _ = await probe(expiry, {"url": url, "json": "data.expires", **extra})
    days = float(path.split("/")[1])
    expected = message.format(where=f"data.expires of {url}", day=day_of(days))
    assert outcome == Outcome(status, expected)


@pytest.mark.parametrize(
    ("path", "json", "words"),
    [
        ("licence/iso/5", "data.ends", 'cannot read data.ends of {url}: data has no key "ends"'),
        (
            "broken",
            "data.expires",
            "cannot read data.expires of {url}: expected status 200, got 500",
        ),
    ],
    ids=["no such field", "API down"],
)
async def test_unreadable_source_is_unknown(api_url: str, path: str, json: str, words: str) -> None:
    url = f"{api_url}/{path}"
    outcome, _ = await probe(expiry, {"url": url, "json": json})
    assert outcome.status is Status.UNKNOWN
    assert outcome.message.startswith(words.format(url=url))


async def test_date_from_a_kubernetes_object(
    prober_kube: CheckApi, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    expires = in_days(5.5).isoformat()
    client.CoreV1Api(kube_api).create_namespaced_config_map(
        ns,
        {
            "metadata": {"name": "licence", "annotations": {"example.com/expires": expires}},
            "data": {"expires": in_days(200.5).date().isoformat()},
        },
    )
    obj = {"apiVersion": "v1", "resource": "configmaps", "namespace": ns, "name": "licence"}
    outcome, _ = await probe(
        expiry, {"object": obj, "annotation": "example.com/expires"}, kube=prober_kube
    )
    assert outcome == Outcome(
        Status.WARN,
        f"configmaps {ns}/licence annotation example.com/expires expires on {day_of(5.5)}, "
        "in 5 days (warnDays 30): renew it",
    )
    outcome, _ = await probe(expiry, {"object": obj, "field": "data.expires"}, kube=prober_kube)
    assert outcome.status is Status.PASS
    assert outcome.message.startswith(f"configmaps {ns}/licence field data.expires expires on ")

    outcome, _ = await probe(
        expiry, {"object": {**obj, "name": "absent"}, "field": "data.expires"}, kube=prober_kube
    )
    assert outcome.status is Status.UNKNOWN
    assert outcome.message.startswith(f"cannot read configmaps {ns}/absent field data.expires: ")
    assert "NotFound" in outcome.message
    outcome, _ = await probe(
        expiry, {"object": obj, "annotation": "example.com/other"}, kube=prober_kube
    )
    assert outcome == Outcome(
        Status.UNKNOWN,
        f"cannot read configmaps {ns}/licence annotation example.com/other: no such annotation",
    )


@pytest.mark.parametrize(
    ("opts", "error"),
    [
        ({}, "with.url: set either url (with json) or object"),
        ({"url": "http://x/"}, "with.json: required with url"),
        ({"url": "ftp://x/", "json": "a"}, "with.url: expected an http:// or https:// URL"),
        (
            {"object": {"apiVersion": "v1", "resource": "configmaps", "name": "x"}},
            "with.field: set field or annotation with object",
        ),
        (
            {"object": {"apiVersion": "a/b/c", "resource": "x", "name": "x"}, "field": "f"},
            'with.object.apiVersion: expected v1 or group/v1, got "a/b/c"',
        ),
        (
            {"url": "http://x/", "json": "a", "warnDays": 5, "errorDays": 10},
            "with.errorDays: expected at most warnDays (5), got 10",
        ),
    ],
)
def test_bad_options_fail_at_load(opts: dict[str, Any], error: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_options(expiry.Spec, opts, "with")
    assert str(caught.value).startswith(error)
