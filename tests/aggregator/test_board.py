"""The HTML status board: its HTTP surface, and the page itself in real headless Chromium.

The board is served next to a fixed unified ``/status`` (three clusters: one all PASS, one with
an ERROR in the middleware layer, one Offline with stale results; ``?cluster=&history=1``
answers with each check's recent results, or 503 for the offline one) on 127.0.0.1, and driven
with Playwright's async API against the Debian ``chromium``. Screenshots land in
``board_artifacts/``; a failing test adds one of the page as it was, named in its output.
"""

from __future__ import annotations

import copy
import html
import json
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from kubeprober.aggregator.board import ASSET_TYPES, add_routes, links, load_assets
from kubeprober.aggregator.board.links import BoardLinks
from tests.aggregator.conftest import failed
from tests.binaries import binary
from tests.conftest import check_no_leaked_tasks
from tests.status_contract import pending_check

# One browser serves every test, so the async ones run in the module's event loop.
IN_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")
ARTIFACTS = Path(__file__).parent / "board_artifacts"
TOKEN = "kp-read-s3cret"
LAYERS = ("application", "middleware", "kubernetes", "infrastructure")
SEVERITY = {"ERROR": 4, "WARN": 3, "UNKNOWN": 2, "INFO": 1, "PASS": 0}
REFUSED = "connection refused to 10.0.0.5:5432"
# Rendered as text, this is harmless; parsed as HTML, it would set window.pwned.
HOSTILE = '<img src=x onerror="window.pwned=1">replica lag 12s'
LINKS = BoardLinks(
    grafana_url="https://grafana.example/", runbook_url="https://git.example/docs/runbooks.md"
)
# Chromium must not reach for the network (which is closed here) on its own.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# --- the fixed unified /status document ------------------------------------------------------


def rfc3339(t: datetime) -> str:
    """Render ``t`` as docs/contracts.md wants it: RFC 3339 UTC with a ``Z``."""
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def summary(statuses: Iterable[str | None], *, status: str | None = None) -> dict[str, Any]:
    """Count ``statuses`` (None: pending) as ``{status, total, pending, byStatus}``, as the
    aggregator does; ``status`` overrides the roll-up (an offline cluster's UNKNOWN)."""
    by = dict.fromkeys(SEVERITY, 0)
    pending = 0
    for s in statuses:
        if s is None:
            pending += 1
        else:
            by[s] += 1
    worst = max((s for s, n in by.items() if n), key=SEVERITY.__getitem__, default=None)
    return {
        "status": status or worst,
        "total": sum(by.values()) + pending,
        "pending": pending,
        "byStatus": by,
    }


def check(
    name: str, status: str | None = "PASS", message: str = "", *, at: datetime
) -> dict[str, Any]:
    """One check as the agent reports it; status None: pending, no result yet."""
    if status is None:
        return pending_check(name)
    return {
        "name": name,
        "status": status,
        "pending": False,
        "message": message,
        "lastRun": rfc3339(at),
        "durationSeconds": 0.012,
        "consecutiveFailures": 0 if status == "PASS" else 3,
        "lastTransitionTime": rfc3339(at),
    }


def probe(name: str, layer: str, checks: list[dict[str, Any]], *, stale: bool) -> dict[str, Any]:
    """One probe rolling up its checks; its message is the worst check's."""
    status = summary(c["status"] for c in checks)["status"]
    bad = [c for c in checks if c["status"] == status and status != "PASS"]
    return {
        "namespace": "kubeprober",
        "name": name,
        "layer": layer,
        "status": status,
        "passed": f"{sum(c['status'] == 'PASS' for c in checks)}/{len(checks)}",
        "message": f"{bad[0]['name']}: {bad[0]['message']}" if bad else "",
        "lastRun": checks[0]["lastRun"],
        "nextRun": None,
        "stale": stale,
        "checks": checks,
    }


def cluster(
    name: str, state: str, probes: list[dict[str, Any]], *, seen: datetime
) -> dict[str, Any]:
    """One cluster; an Offline one is UNKNOWN, its stale results counted as they are."""
    override = "UNKNOWN" if state == "Offline" else None
    by_layer = {
        lay: [c["status"] for p in probes if p["layer"] == lay for c in p["checks"]]
        for lay in LAYERS
    }
    return {
        "name": name,
        "state": state,
        "lastSeen": rfc3339(seen),
        "agentVersion": "0.1.0",
        "kubernetesVersion": "v1.30.2",
        "nodeCount": 3,
        "assignmentRevision": 7,
        "summary": summary((s for ss in by_layer.values() for s in ss), status=override),
        "layers": {
            lay: summary(ss, status=override if ss else None) for lay, ss in by_layer.items()
        },
        "probes": probes,
    }


def fleet(now: datetime) -> dict[str, Any]:
    """Three clusters, named so that alphabetical order is the reverse of worst-first."""
    at = now - timedelta(seconds=20)

    def healthy(stale: bool, when: datetime) -> list[dict[str, Any]]:
        return [
            probe("frontend", "application", [check("login", at=when)], stale=stale),
            probe("postgres", "middleware", [check("connect", at=when)], stale=stale),
            probe("dns", "kubernetes", [check("resolve", at=when)], stale=stale),
            probe("nodes", "infrastructure", [check("ready", at=when)], stale=stale),
        ]

    broken = healthy(False, at)
    broken[1] = probe(
        "postgres",
        "middleware",
        [
            check("query", at=at),
            check("connect", "ERROR", REFUSED, at=at),
            check("replication", "WARN", HOSTILE, at=at),
        ],
        stale=False,
    )
    gone = now - timedelta(minutes=15)
    clusters = [
        cluster("alpha", "Online", healthy(False, at), seen=now),
        cluster("mars", "Offline", healthy(True, gone), seen=gone),
        cluster("zulu", "Online", broken, seen=now),
    ]
    checks = [c["status"] for cl in clusters for p in cl["probes"] for c in p["checks"]]
    fleet_summary = summary(checks, status="ERROR")  # the worst cluster's status
    return {"generatedAt": rfc3339(now), "summary": fleet_summary, "clusters": clusters}


def history(check: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    """A check's last 20 results, as an agent keeps them: PASS, then its failures in a row."""
    if check["pending"]:
        return []
    statuses = ["PASS"] * (20 - check["consecutiveFailures"])
    statuses += [check["status"]] * check["consecutiveFailures"]
    return [
        {
            "startedAt": rfc3339(now - timedelta(seconds=30 * (len(statuses) - i))),
            "status": s,
            "durationSeconds": 0.012,
            "message": "" if s == "PASS" else check["message"],
        }
        for i, s in enumerate(statuses)
    ]


# --- the server ------------------------------------------------------------------------------


@dataclass
class Fleet:
    """What the test's ``/status`` serves; the test changes it while the page runs."""

    doc: dict[str, Any]
    fail: bool = False
    authorizations: list[str | None] = field(default_factory=list)
    histories_asked: list[str] = field(default_factory=list)
    """Clusters whose recent results the page asked for (``?cluster=NAME&history=1``)."""


FLEET = web.AppKey("fleet", Fleet)


async def status(request: web.Request) -> web.Response:
    """Serve the current document, as the aggregator would behind a read token; with
    ``history=1``, one cluster's with each check's recent results (503 if it is offline)."""
    state = request.app[FLEET]
    auth = request.headers.get("Authorization")
    state.authorizations.append(auth)
    if auth != f"Bearer {TOKEN}":
        raise web.HTTPUnauthorized(text="read token required\n")
    if state.fail:
        raise web.HTTPInternalServerError(text="puller crashed\n")
    if request.query.get("history") != "1":
        assert not request.query, "the fleet's document is asked for whole"
        return web.json_response(state.doc)
    name = request.query["cluster"]
    state.histories_asked.append(name)
    (entry,) = copy.deepcopy([c for c in state.doc["clusters"] if c["name"] == name])
    if entry["state"] != "Online":
        error = f"cluster {name} is not connected: its agent keeps the history"
        return web.json_response({"error": error}, status=503)
    now = datetime.now(UTC)
    for p in entry["probes"]:
        for c in p["checks"]:
            c["history"] = history(c, now)
    return web.json_response({**state.doc, "clusters": [entry]})


@dataclass
class Served:
    base: str
    fleet: Fleet


@pytest_asyncio.fixture(loop_scope="module")
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """Run the board and a fixed ``/status`` on 127.0.0.1, port 0; the board links checks to
    Grafana and runbooks (``LINKS``) unless the test passes other links as its parameter."""
    app = web.Application()
    app[FLEET] = Fleet(fleet(datetime.now(UTC)))
    add_routes(app, links=getattr(request, "param", LINKS))
    app.router.add_get("/status", status)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield Served(f"http://{host}:{port}", app[FLEET])
    finally:
        await runner.cleanup()


# --- plain HTTP ------------------------------------------------------------------------------


@IN_MODULE_LOOP
async def test_page_and_assets_are_served_with_types_and_cache_headers(served: Served) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{served.base}/") as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "text/html; charset=utf-8"
            assert r.headers["Cache-Control"] == "no-cache"
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            html = await r.text()
            etag = r.headers["ETag"]
        async with http.get(f"{served.base}/", headers={"If-None-Match": etag}) as r:
            assert r.status == 304
            assert await r.read() == b""

        # No CDN, no external font: every URL in the page is relative or a data: URL.
        refs = re.findall(r'(?:src|href)="([^"]*)"', html)
        assert refs and all(not urlsplit(u).netloc for u in refs), refs
        for name, ctype in ASSET_TYPES.items():
            (url,) = re.findall(rf'"(board/{re.escape(name)}\?v=[0-9a-f]+)"', html)
            async with http.get(f"{served.base}/{url}") as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == ctype
                assert "immutable" in r.headers["Cache-Control"]
                assert len(await r.read()) > 100
            # Unversioned (or outdated) asset URLs must be revalidated, never pinned.
            async with http.get(f"{served.base}/board/{name}?v=old") as r:
                assert r.status == 200
                assert r.headers["Cache-Control"] == "no-cache"

        for bad in ("nope.js", "index.html", "__init__.py", "links.py", "..%2F__init__.py"):
            async with http.get(f"{served.base}/board/{bad}") as r:
                assert r.status == 404, bad


def page_links(links: BoardLinks) -> Any:
    """The link templates the served page carries in its ``<meta name="kubeprober-links">``."""
    page = load_assets(links)["index.html"].body.decode()
    (content,) = re.findall(r'<meta name="kubeprober-links" content="([^"]*)">', page)
    return json.loads(html.unescape(content))


REPO = Path(__file__).resolve().parents[2]


def test_links_name_the_products_own_dashboards_panel_and_runbooks() -> None:
    """aggregator/board/links.py against dashboards/, alerts/ and docs/runbooks.md."""
    dashboards = {
        d["uid"]: d for d in (json.loads(f.read_text()) for f in REPO.glob("dashboards/*.json"))
    }
    check_board = dashboards[links.CHECK_DASHBOARD]
    variables = {v["name"] for v in check_board["templating"]["list"]}
    assert set(links.CHECK_VARIABLES) <= variables
    (panel,) = (p for p in check_board["panels"] if p["id"] == links.CHECK_PANEL)
    assert panel["title"] == "Status history"
    cluster_board = dashboards[links.CLUSTER_DASHBOARD]
    assert "cluster" in {v["name"] for v in cluster_board["templating"]["list"]}

    rules = yaml.safe_load((REPO / "alerts/kubeprober.rules.yaml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    sections = re.findall(r"^## (\w+)$", (REPO / "docs/runbooks.md").read_text(), re.MULTILINE)
    for what, name in links.RUNBOOK_ALERTS.items():
        assert name in sections, name
        # The fragment is the one the alert's own runbook_url uses.
        runbook_url = alerts[name]["annotations"]["runbook_url"]
        assert runbook_url.endswith(f"docs/runbooks.md#{links.runbook_anchor(name)}")
        if what in SEVERITY:  # a check's status: the alert is the one that status raises
            assert f'kubeprober_check_status{{status="{what}"}} == 1' in alerts[name]["expr"]
    assert "kubeprober_agent_up == 0" in alerts[links.RUNBOOK_ALERTS["offline"]]["expr"]


def test_the_page_receives_the_link_templates_of_its_base_urls() -> None:
    assert page_links(BoardLinks()) == {}  # no base URL, no link that leads nowhere
    runbooks = "https://git.example/docs/runbooks.md#"
    assert page_links(LINKS) == {
        "checkPanel": "https://grafana.example/d/kubeprober-check?var-cluster={cluster}"
        "&var-namespace={namespace}&var-probe={probe}&var-check={check}&viewPanel=1",
        "clusterDashboard": "https://grafana.example/d/kubeprober-cluster?var-cluster={cluster}",
        "runbooks": {
            "ERROR": f"{runbooks}kubeprobercheckfailing",
            "UNKNOWN": f"{runbooks}kubeprobercheckunknown",
            "offline": f"{runbooks}kubeproberagentdown",
            "configError": f"{runbooks}kubeproberprobefileinvalid",
        },
    }
    hostile = BoardLinks(runbook_url='https://x.example/r.md"><script>')
    assert page_links(hostile)["runbooks"]["ERROR"].startswith('https://x.example/r.md"><script>')
    assert "<script>#" not in load_assets(hostile)["index.html"].body.decode()


# --- in Chromium -----------------------------------------------------------------------------


@dataclass
class Watched:
    """A page and what it did: console errors and every URL it requested."""

    page: Page
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def assert_loopback_only(self) -> None:
        """Fail if the page asked any host but 127.0.0.1 for anything."""
        assert self.requests
        away = [
            u
            for u in self.requests
            if urlsplit(u).scheme != "data" and urlsplit(u).hostname != "127.0.0.1"
        ]
        assert not away, away


@pytest_asyncio.fixture(loop_scope="module")
async def no_leaked_tasks(browser: Browser) -> AsyncIterator[None]:
    """The suite's check that a test leaves no task running, in the loop these tests run in
    (after the module's browser has started its own)."""
    async for _ in check_no_leaked_tasks():
        yield


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Launch the Debian Chromium, headless and kept off the network: once for the module,
    each test taking a fresh context of its own."""
    path = binary("chromium")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            await b.close()


@pytest_asyncio.fixture(loop_scope="module")
async def watched(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Watched]:
    """A fresh page that records console errors, page errors and requests; if the test fails,
    a screenshot of the page as it was then is saved and named in the test's output."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    w = Watched(page)

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            w.errors.append(f"{msg.text} @ {msg.location.get('url')}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: w.errors.append(f"uncaught: {exc}"))
    context.on("request", lambda req: w.requests.append(req.url))
    try:
        yield w
    finally:
        if failed(request):
            ARTIFACTS.mkdir(exist_ok=True)
            name = re.sub(r"[^\w.-]", "_", request.node.name)
            shot = ARTIFACTS / f"{name}-failed.png"
            await page.screenshot(path=shot, full_page=True)
            print(f"the page when the test failed: {shot} (at {page.url})")
        await context.close()


async def open_board(w: Watched, served: Served) -> Page:
    """Open the board with the read token and a 1 s refresh; wait for the first render."""
    page = w.page
    ARTIFACTS.mkdir(exist_ok=True)
    await page.goto(f"{served.base}/?token={TOKEN}&refresh=1")
    await expect(page.locator("tbody.cluster")).to_have_count(3)
    return page


async def cluster_order(page: Page) -> list[str]:
    """Return the cluster names in the order the board shows them."""
    names: list[str] = await page.locator("tbody.cluster").evaluate_all(
        "els => els.map(e => e.dataset.cluster)"
    )
    return names


async def next_refresh(page: Page, served: Served) -> None:
    """Serve a newer document and wait until the page has drawn it."""
    before = await page.evaluate("document.body.dataset.generatedAt")
    later = rfc3339(datetime.now(UTC) + timedelta(days=1))
    served.fleet.doc = {**served.fleet.doc, "generatedAt": later}
    # Not wait_for_function: the board's CSP forbids the eval it needs, as it should.
    await expect(page.locator("body")).not_to_have_attribute("data-generated-at", before)


def row(page: Page, name: str) -> Any:
    """Return the locator of cluster ``name``'s group of rows."""
    return page.locator(f'tbody.cluster[data-cluster="{name}"]')


@pytest.mark.slow
@IN_MODULE_LOOP
async def test_board_shows_fleet_worst_first_and_drills_down(
    served: Served, watched: Watched
) -> None:
    page = await open_board(watched, served)
    assert await cluster_order(page) == ["zulu", "mars", "alpha"]
    await expect(page.locator("#fleet")).to_contain_text("3 clusters (2 Online, 1 Offline")
    await expect(page.locator("#fleet")).to_contain_text("1 ERROR")
    await expect(page.locator("#updated")).to_contain_text(re.compile(r"updated \d+s ago"))
    assert await page.title() == "ERROR · kubeprober fleet"
    await page.screenshot(path=ARTIFACTS / "board-collapsed.png", full_page=True)

    # The layer cells say their status in words, not only in colour.
    zulu = row(page, "zulu")
    middleware = zulu.locator("td.layer").nth(1).get_by_role("button")
    await expect(middleware).to_contain_text("ERROR")
    await expect(middleware).to_contain_text("1 ERROR · 1 WARN · 1 PASS")
    await expect(zulu.locator("td.layer").nth(0)).to_contain_text("PASS")

    # The offline cluster is marked, and so is its data.
    mars = row(page, "mars")
    await expect(mars).to_have_class(re.compile(r"\bstale\b"))
    await expect(mars.locator("tr.row")).to_contain_text("Offline")
    await expect(mars.locator("tr.row")).to_contain_text("stale data")
    await expect(mars.locator("tr.row")).to_contain_text("UNKNOWN")
    await expect(mars.locator("tr.row")).to_contain_text("15m ago")
    # Its counts are of the stale results, as /status lists them, and say so.
    stale_counts = re.compile(r"UNKNOWN\s*last: 1\sPASS")
    await expect(mars.locator("td.layer").first).to_contain_text(stale_counts)
    await expect(mars.locator("tr.row td").first).to_contain_text("last: 4\u00a0PASS")
    await expect(page.locator("#fleet")).not_to_contain_text("UNKNOWN")  # no check is

    # The failing check's message is at the top before any click (test_failing_now_...);
    # in the cluster table it is there once its cluster is opened.
    message = zulu.get_by_text(REFUSED, exact=True)
    await expect(message).to_be_hidden()
    name = zulu.get_by_role("button", name="zulu", exact=True)
    await expect(name).to_have_attribute("aria-expanded", "false")
    await name.click()
    await expect(name).to_have_attribute("aria-expanded", "true")
    await expect(message).to_be_visible()
    # Failing probes first, failing checks first within them.
    probes = zulu.locator("section.probe .probe-name")
    await expect(probes.first).to_have_text("kubeprober/postgres")
    checks = zulu.locator("section.probe").first.locator("table.checks tbody th")
    await expect(checks).to_have_text(["connect", "replication", "query"])

    # Data is text, never markup.
    await expect(zulu.get_by_text(HOSTILE, exact=True)).to_be_visible()
    assert await page.locator("img").count() == 0
    assert await page.evaluate("window.pwned") is None

    # A layer cell narrows the drill-down to its layer.
    await middleware.click()
    await expect(middleware).to_have_attribute("aria-expanded", "true")
    await expect(zulu.locator(".drill h3")).to_contain_text("zulu: middleware layer")
    await expect(zulu.locator("section.probe")).to_have_count(1)
    await row(page, "mars").get_by_role("button", name="mars", exact=True).click()
    await expect(mars.locator(".stale-note")).to_contain_text("Cluster offline")
    await expect(mars.locator("section.probe .stale-tag")).to_have_count(4)

    await page.screenshot(path=ARTIFACTS / "board-expanded.png", full_page=True)
    await page.emulate_media(color_scheme="dark")
    await page.screenshot(path=ARTIFACTS / "board-expanded-dark.png", full_page=True)

    # It stays open across refreshes.
    await next_refresh(page, served)
    await expect(message).to_be_visible()

    assert watched.errors == []
    watched.assert_loopback_only()
    assert set(served.fleet.authorizations) == {f"Bearer {TOKEN}"}


@pytest.mark.slow
@IN_MODULE_LOOP
async def test_board_refreshes_and_keeps_data_when_status_fails(
    served: Served, watched: Watched
) -> None:
    # Without the read token, the banner says what is missing.
    banner = watched.page.get_by_role("alert")
    await watched.page.goto(f"{served.base}/?refresh=1")
    await expect(banner).to_contain_text("HTTP 401")
    await expect(banner).to_contain_text("?token=")

    page = await open_board(watched, served)
    await expect(banner).to_be_hidden()
    alpha = row(page, "alpha")
    await expect(alpha.locator("tr.row")).to_contain_text("PASS")

    # A new document is picked up without a reload: alpha now warns and moves up.
    doc = copy.deepcopy(served.fleet.doc)
    (alpha_doc,) = (c for c in doc["clusters"] if c["name"] == "alpha")
    alpha_doc["summary"] = summary(["WARN", "PASS", "PASS", "PASS"])
    alpha_doc["layers"]["kubernetes"] = summary(["WARN"])
    served.fleet.doc = doc
    await expect(alpha.locator("tr.row")).to_contain_text("WARN", timeout=5000)
    # An offline cluster stays above a WARN one: it ranks with the most severe.
    assert await cluster_order(page) == ["zulu", "mars", "alpha"]

    # /status fails: a banner says so, the last good data stays.
    served.fleet.fail = True
    await expect(banner).to_be_visible(timeout=5000)
    await expect(banner).to_contain_text("HTTP 500")
    await expect(page.locator("tbody.cluster")).to_have_count(3)
    await expect(alpha.locator("tr.row")).to_contain_text("WARN")
    await expect(page.locator("#updated")).to_contain_text(re.compile(r"updated [1-9]\d*s ago"))
    await page.screenshot(path=ARTIFACTS / "board-error.png")

    # And it recovers by itself.
    served.fleet.fail = False
    await expect(banner).to_be_hidden(timeout=5000)

    # The only console errors are Chromium's own lines for the failed fetches.
    assert watched.errors
    assert all(re.search("status of (401|500)", e) for e in watched.errors), watched.errors
    watched.assert_loopback_only()


@pytest.mark.slow
@IN_MODULE_LOOP
async def test_board_works_from_the_keyboard(served: Served, watched: Watched) -> None:
    page = await open_board(watched, served)
    zulu = row(page, "zulu")
    # The first stop is the worst failing cluster of the failing list; Enter opens it below,
    # at the layer that fails, and takes the focus there.
    await page.keyboard.press("Tab")
    focused = page.locator(":focus")
    await expect(focused).to_have_attribute("data-open", "zulu")
    await page.keyboard.press("Enter")
    await expect(focused).to_have_attribute("data-cluster", "zulu")
    await expect(zulu.get_by_text(REFUSED, exact=True)).to_be_visible()
    await expect(zulu.locator(".drill h3")).to_contain_text("zulu: middleware layer")
    # A refresh redraws the table; focus must stay on the same control.
    await next_refresh(page, served)
    await expect(focused).to_have_attribute("aria-expanded", "true")
    await page.keyboard.press("Space")
    await expect(zulu.locator(".drill h3")).to_contain_text("zulu: all layers")
    # A refresh between the key going down and coming up must not lose the press.
    await page.keyboard.down(" ")
    await next_refresh(page, served)
    await page.keyboard.up(" ")
    await expect(zulu.get_by_text(REFUSED, exact=True)).to_be_hidden()
    await expect(focused).to_have_attribute("aria-expanded", "false")

    # After the filter box and "problems only" comes the worst cluster.
    await page.locator("#filter").focus()
    for _ in range(2):
        await page.keyboard.press("Tab")
    await expect(focused).to_have_attribute("data-cluster", "zulu")

    # The filter and "problems only" narrow the list.
    await page.locator("#filter").fill("ar")
    assert await cluster_order(page) == ["mars"]
    await page.locator("#filter").fill("")
    await page.get_by_label("problems only").check()
    assert await cluster_order(page) == ["zulu", "mars"]
    assert watched.errors == []


@pytest.mark.slow
@IN_MODULE_LOOP
async def test_board_gives_the_kubeconfig_command_of_clusters_that_accept_kubectl(
    served: Served, watched: Watched
) -> None:
    doc = copy.deepcopy(served.fleet.doc)
    (alpha,) = (c for c in doc["clusters"] if c["name"] == "alpha")
    alpha["apiProxy"] = "read"
    served.fleet.doc = doc
    page = await open_board(watched, served)
    command = row(page, "alpha").locator(".kubectl-command")
    await expect(command).to_contain_text("kubeprober kubeconfig --cluster alpha --aggregator http")
    await expect(command).to_contain_text("-o alpha.kubeconfig && export KUBECONFIG=")
    await expect(row(page, "zulu").locator(".kubectl-command")).to_have_count(0)
    assert watched.errors == []


@pytest.mark.slow
@IN_MODULE_LOOP
async def test_board_marks_probe_files_that_did_not_load(served: Served, watched: Watched) -> None:
    broken = {"file": "/etc/kubeprober/web.yaml", "message": "not UTF-8: byte 0xff on line 3"}
    unborn = {"file": "/etc/kubeprober/new.yaml", "message": HOSTILE}
    doc = copy.deepcopy(served.fleet.doc)
    (alpha,) = (c for c in doc["clusters"] if c["name"] == "alpha")
    alpha["configErrors"] = [broken, unborn]
    (frontend,) = (p for p in alpha["probes"] if p["name"] == "frontend")
    frontend["configError"] = broken
    served.fleet.doc = doc
    page = await open_board(watched, served)

    # The cluster row says it, in words, with each file and reason on hover.
    tag = row(page, "alpha").locator("tr.row .config-tag")
    await expect(tag).to_have_text("2 config errors")
    await expect(tag).to_have_attribute(
        "title", f"{broken['file']}: {broken['message']}\n{unborn['file']}: {HOSTILE}"
    )
    await expect(row(page, "zulu").locator(".config-tag")).to_have_count(0)
    # A config error is a problem even when every check passes.
    await page.get_by_label("problems only").check()
    assert await cluster_order(page) == ["zulu", "mars", "alpha"]
    await page.get_by_label("problems only").uncheck()

    # Opened: every error is listed, and the probe kept back is marked.
    await row(page, "alpha").get_by_role("button", name="alpha", exact=True).click()
    listed = row(page, "alpha").locator(".config-errors li")
    await expect(listed).to_have_text(
        [f"{broken['file']}: {broken['message']}", f"{unborn['file']}: {HOSTILE}"]
    )
    marked = row(page, "alpha").locator("section.probe", has=page.locator(".config-tag"))
    await expect(marked).to_have_count(1)
    await expect(marked.locator(".probe-name")).to_have_text("kubeprober/frontend")
    await expect(marked.locator(".config-note")).to_have_text(
        f"Runs its previous version: {broken['file']}: {broken['message']}"
    )
    assert await page.evaluate("window.pwned") is None
    await page.screenshot(path=ARTIFACTS / "board-config-error.png", full_page=True)

    # Mended: the marks go at the next refresh.
    del alpha["configErrors"]
    frontend["configError"] = None
    await next_refresh(page, served)
    await expect(page.locator(".config-tag")).to_have_count(0)
    await expect(page.locator(".config-errors")).to_have_count(0)
    assert watched.errors == []


@pytest.mark.slow
@IN_MODULE_LOOP
@pytest.mark.parametrize("served", [BoardLinks()], indirect=True, ids=["without-links"])
async def test_board_shows_pending_and_no_checks_never_unknown(
    served: Served, watched: Watched
) -> None:
    now = datetime.now(UTC)
    doc = copy.deepcopy(served.fleet.doc)
    waiting = [
        probe("frontend", "application", [check("login", None, at=now)], stale=False),
        probe("dns", "kubernetes", [check("resolve", None, at=now)], stale=False),
    ]
    doc["clusters"][0] = cluster("alpha", "Online", waiting, seen=now)
    served.fleet.doc = doc
    page = await open_board(watched, served)
    alpha = row(page, "alpha")
    summary_cell = alpha.locator("tr.row td").first
    await expect(summary_cell).to_contain_text("pending")
    await expect(summary_cell).to_contain_text("2\u00a0pending")
    await expect(alpha.locator("td.layer").first).to_contain_text("pending")
    await expect(alpha.locator("td.layer").nth(1)).to_contain_text("no checks")
    await expect(alpha).not_to_contain_text("UNKNOWN")
    await alpha.get_by_role("button", name="alpha", exact=True).click()
    await expect(alpha.locator("section.probe")).to_have_count(2)
    await expect(alpha.locator(".drill")).not_to_contain_text("UNKNOWN")
    await expect(alpha.locator("table.checks .badge").first).to_have_text(re.compile("pending"))
    # Nothing checked is not healthy: "problems only" keeps it.
    await page.get_by_label("problems only").check()
    assert await cluster_order(page) == ["zulu", "mars", "alpha"]

    # A cluster with no checks at all says so, and is no PASS either.
    doc = copy.deepcopy(doc)
    doc["clusters"][0] = cluster("alpha", "Online", [], seen=now)
    served.fleet.doc = doc
    await expect(summary_cell).to_contain_text("no checks", timeout=5000)
    await expect(alpha.locator("tr.row")).not_to_contain_text("PASS")
    assert await cluster_order(page) == ["zulu", "mars", "alpha"]

    # Told no base URL, the board shows no link that would lead nowhere.
    await row(page, "zulu").get_by_role("button", name="zulu", exact=True).click()
    await expect(row(page, "zulu").locator("table.checks").first).to_be_visible()
    await expect(page.locator("a.out")).to_have_count(0)
    await expect(page.get_by_role("columnheader", name="Links")).to_have_count(0)
    assert watched.errors == []


def failing_rows(page: Page) -> Any:
    """The rows of the "Failing now" list."""
    return page.locator("section#failing table tbody tr")


@IN_MODULE_LOOP
async def test_a_checks_targets_are_one_row_and_its_failing_ones(
    served: Served, watched: Watched
) -> None:
    now = datetime.now(UTC)
    doc = copy.deepcopy(served.fleet.doc)
    hosts = [
        check("hosts/a.example", at=now),
        check("hosts/b.example", at=now),
        check("hosts/slow.example", "WARN", "answered in 4.2s", at=now),
    ]
    frontend = probe("frontend", "application", [check("login", at=now), *hosts], stale=False)
    frontend["targets"] = [{"check": "hosts", "total": 3, "leftOut": 2, "message": ""}]
    doc["clusters"][0] = cluster("alpha", "Online", [frontend], seen=now)
    served.fleet.doc = doc
    page = await open_board(watched, served)
    alpha = row(page, "alpha")
    await alpha.get_by_role("button", name="alpha", exact=True).click()
    section = alpha.locator("section.probe", has_text="kubeprober/frontend")
    await expect(section.locator("table.checks tbody th")).to_have_text(
        ["login", "hosts", "hosts/slow.example"]
    )
    group = section.locator("tr.group")
    await expect(group).to_contain_text("WARN")
    await expect(group).to_contain_text("2/3 PASS; 2 more left out (over the cap)")
    assert watched.errors == []


@pytest.mark.slow
@IN_MODULE_LOOP
async def test_failing_now_is_at_the_top_with_messages_since_and_links(
    served: Served, watched: Watched
) -> None:
    page = await open_board(watched, served)
    rows = failing_rows(page)
    # Before any click: every failing check of every cluster, and the offline one, worst first.
    await expect(page.locator("section#failing h2")).to_have_text("Failing now (3)")
    await expect(rows).to_have_count(3)
    await expect(rows.nth(0)).to_contain_text(
        re.compile(r"ERROR\s*zulu\s*kubeprober/postgres · connect\s*" + re.escape(REFUSED))
    )
    await expect(rows.nth(1)).to_contain_text(re.compile(r"Offline\s*mars\s*agent\s*Agent offline"))
    await expect(rows.nth(1)).to_contain_text("last seen 15m ago")
    await expect(rows.nth(2)).to_contain_text(re.compile(r"WARN\s*zulu.*replication"))
    await expect(rows.nth(2).locator("td.message")).to_have_text(HOSTILE)  # text, never markup
    # Failing since lastTransitionTime, exact on hover.
    (zulu,) = (c for c in served.fleet.doc["clusters"] if c["name"] == "zulu")
    connect = zulu["probes"][1]["checks"][1]
    since = rows.nth(0).locator(".since")
    await expect(since).to_contain_text(re.compile(r"^failing since \d+s ago$"))
    await expect(since.locator("time")).to_have_attribute("title", connect["lastTransitionTime"])
    await page.screenshot(path=ARTIFACTS / "board-failing.png")

    # Links to the check's Grafana panel and to the runbook of the alert it raises.
    def link(n: int, name: str) -> Any:
        return rows.nth(n).get_by_role("link", name=re.compile(f"^{name}"))

    await expect(link(0, "Grafana panel")).to_have_attribute(
        "href",
        "https://grafana.example/d/kubeprober-check?var-cluster=zulu&var-namespace=kubeprober"
        "&var-probe=postgres&var-check=connect&viewPanel=1",
    )
    await expect(link(0, "runbook")).to_have_attribute(
        "href", "https://git.example/docs/runbooks.md#kubeprobercheckfailing"
    )
    await expect(link(0, "runbook")).to_have_attribute("rel", "noopener noreferrer")
    await expect(link(1, "runbook")).to_have_attribute(
        "href", "https://git.example/docs/runbooks.md#kubeproberagentdown"
    )
    await expect(link(1, "Grafana dashboard")).to_have_attribute(
        "href", "https://grafana.example/d/kubeprober-cluster?var-cluster=mars"
    )
    await expect(link(2, "Grafana panel")).to_have_count(1)
    await expect(link(2, "runbook")).to_have_count(0)  # no alert pages on a WARN check

    # The cluster filter narrows it too.
    await page.locator("#filter").fill("ars")
    await expect(rows).to_have_count(1)
    await page.locator("#filter").fill("")

    # A cluster named there opens below, at the failing layer, and the address says so.
    await rows.nth(0).get_by_role("button", name="zulu").click()
    await expect(row(page, "zulu").locator(".drill h3")).to_contain_text("zulu: middleware layer")
    assert "open=zulu%3Amiddleware" in page.url

    # Nothing failing among the clusters shown: it says so.
    await page.locator("#filter").fill("alpha")
    await expect(page.locator("section#failing .note")).to_have_text("Nothing is failing.")
    await expect(page.locator("section#failing table")).to_be_hidden()
    assert await page.evaluate("window.pwned") is None
    assert watched.errors == []


def with_probe(doc: dict[str, Any], extra: dict[str, Any], *names: str) -> dict[str, Any]:
    """``doc`` with probe ``extra`` added to clusters ``names``, their summaries recounted."""
    doc = copy.deepcopy(doc)
    for i, c in enumerate(doc["clusters"]):
        if c["name"] in names:
            seen = datetime.fromisoformat(c["lastSeen"].replace("Z", "+00:00"))
            doc["clusters"][i] = cluster(c["name"], c["state"], [*c["probes"], extra], seen=seen)
    return doc


@pytest.mark.slow
@IN_MODULE_LOOP
async def test_by_probe_view_shows_a_probe_once_with_its_clusters_and_links_share_the_view(
    served: Served, watched: Watched
) -> None:
    now = datetime.now(UTC)
    expiring = "certificate of shop.example expires in 5 days"
    cert = probe("shop-cert", "application", [check("tls", "WARN", expiring, at=now)], stale=False)
    served.fleet.doc = with_probe(served.fleet.doc, cert, "alpha", "zulu")
    page = await open_board(watched, served)
    await page.get_by_role("button", name="By probe").click()
    await expect(page.get_by_role("button", name="By probe")).to_have_attribute(
        "aria-pressed", "true"
    )
    await expect(page.locator("table.clusters")).to_be_hidden()
    probes = page.locator("table.probes tbody tr")
    keys = await probes.evaluate_all("rows => rows.map(r => r.dataset.probe)")
    # Worst first; among equals, the one failing on more clusters.
    assert keys == [
        "kubeprober/postgres",
        "kubeprober/shop-cert",
        "kubeprober/dns",
        "kubeprober/frontend",
        "kubeprober/nodes",
    ]
    shop = page.locator('table.probes tr[data-probe="kubeprober/shop-cert"]')
    await expect(shop.locator("button.chip")).to_have_text(["▲ alpha WARN", "▲ zulu WARN"])
    await expect(shop).to_contain_text("2 of 2 failing")
    await expect(shop.locator("td.message")).to_have_text(f"alpha: tls: {expiring}")
    postgres = page.locator('table.probes tr[data-probe="kubeprober/postgres"]')
    await expect(postgres).to_contain_text("2 of 3 failing · 1 passing")
    await expect(postgres.locator("button.chip.stale")).to_have_text("? mars UNKNOWN (stale)")
    await page.screenshot(path=ARTIFACTS / "board-by-probe.png", full_page=True)

    # The view is in the address: opened elsewhere, the link shows the same.
    await page.locator("#filter").fill("zul")
    await expect(shop).to_contain_text("1 of 1 failing")
    shared = page.url
    assert "view=probes" in shared
    assert "filter=zul" in shared
    again = await page.context.new_page()
    await again.goto(shared)
    await expect(
        again.locator('table.probes tr[data-probe="kubeprober/shop-cert"]')
    ).to_contain_text("1 of 1 failing")
    await expect(again.locator("#filter")).to_have_value("zul")
    await again.close()

    # A cluster chip opens that cluster at the probe's layer, in the cluster view.
    await page.locator("#filter").fill("")
    await shop.get_by_role("button", name="zulu").click()
    await expect(page.locator("table.probes")).to_be_hidden()
    zulu = row(page, "zulu")
    await expect(zulu.locator(".drill h3")).to_contain_text("zulu: application layer")
    await page.get_by_label("problems only").check()
    shared = page.url
    assert "view=" not in shared
    again = await page.context.new_page()
    await again.goto(shared)
    await expect(row(again, "zulu").locator(".drill h3")).to_contain_text("zulu: application layer")
    await expect(again.get_by_label("problems only")).to_be_checked()
    assert await cluster_order(again) == ["zulu", "mars", "alpha"]
    await again.close()
    assert watched.errors == []


@pytest.mark.slow
@IN_MODULE_LOOP
async def test_an_opened_cluster_draws_each_checks_recent_results(
    served: Served, watched: Watched
) -> None:
    page = await open_board(watched, served)
    zulu = row(page, "zulu")
    await zulu.get_by_role("button", name="zulu", exact=True).click()
    connect = zulu.locator(
        'section.probe[data-probe="kubeprober/postgres"] tr[data-check="connect"]'
    )
    strip = connect.get_by_role("img")
    # 17 PASS then the 3 failures in a row that consecutiveFailures counts, oldest first.
    await expect(strip).to_have_attribute(
        "aria-label", "last 20 results, oldest first: 3 ERROR, 17 PASS"
    )
    ticks = strip.locator(".tick")
    await expect(ticks).to_have_count(20)
    await expect(strip.locator(".tick.bad")).to_have_count(3)
    await expect(ticks.last).to_have_attribute(
        "title", re.compile(f"Z ERROR: {REFUSED} \\(12 ms\\)$")
    )
    await expect(ticks.first).to_have_class(re.compile(r"\bs-pass\b"))
    await expect(connect).to_contain_text(re.compile(r"failing since \d+s ago"))
    await page.screenshot(path=ARTIFACTS / "board-history.png", full_page=True)
    # Asked for zulu alone, with the cluster opened; the fleet's document never (the server
    # asserts it is asked for whole).
    assert set(served.fleet.histories_asked) == {"zulu"}

    # An offline cluster's agent is not there to ask: the board says so and does not ask.
    mars = row(page, "mars")
    await mars.get_by_role("button", name="mars", exact=True).click()
    await expect(mars.locator(".history-note")).to_have_text(
        "Recent results unavailable: the cluster is offline, and only its agent keeps them"
    )
    await expect(mars.locator("td.recent").first).to_have_text("—")
    await next_refresh(page, served)
    assert "mars" not in served.fleet.histories_asked
    assert watched.errors == []
