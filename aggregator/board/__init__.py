"""The aggregator's HTML status board: ``/`` and its static assets under ``/board/``.

Operators need one glance at the fleet without Grafana, so the aggregator serves a small page
that polls the unified ``/status`` and draws it. The page is plain files shipped as package data
(``index.html``, ``board.css`` and the scripts of :data:`ASSET_TYPES`): no build step, no
framework, and nothing fetched from outside the aggregator, since it must work on an air-gapped
network. It holds no data of its own and never reads the registry: everything it shows comes
from ``/status`` (an opened cluster's recent results from ``/status?cluster=NAME&history=1``),
the same contract the CLI uses, so the board cannot drift from the API.

The scripts load in order, one thing each: ``dom.js`` (building elements, statuses, times),
``checks.js`` (one check: since when, its strip of recent results, its links, its row),
``failing.js`` (the "Failing now" list), ``probes.js`` (the by-probe view), ``clusters.js``
(the by-cluster table and drill-down) and ``board.js`` (polling, the view's state in the URL,
events). What a check shows is added in ``checks.js``.

Caching: asset URLs in the served ``index.html`` carry a content hash (``?v=``), so a browser
may keep an asset for a year, yet a new release is picked up as soon as the page is reloaded.
The page itself is always revalidated.

Links: with ``--grafana-url`` and ``--runbook-url`` the page links checks to their Grafana
panel and runbook. :mod:`.links` makes the URL templates; they reach the page in a ``<meta>``
of ``index.html``, so the page needs no second request and ``/status`` stays what it is.

Read token: the page sends ``Authorization: Bearer <token>`` on its ``/status`` requests when it
was opened as ``/?token=<token>``. Browsers cannot hand a page the headers it was loaded with, so
the query parameter is how a token-protected ``/status`` is reached from a plain bookmark.
"""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from kubeprober.aggregator.board.links import BoardLinks

# name -> Content-Type; the only files served under /board/, so a request cannot name
# anything else in the package (no path handling, hence no traversal to guard against).
ASSET_TYPES: dict[str, str] = {
    "dom.js": "text/javascript; charset=utf-8",
    "checks.js": "text/javascript; charset=utf-8",
    "failing.js": "text/javascript; charset=utf-8",
    "probes.js": "text/javascript; charset=utf-8",
    "clusters.js": "text/javascript; charset=utf-8",
    "board.js": "text/javascript; charset=utf-8",
    "board.css": "text/css; charset=utf-8",
}

# The page loads only its own files and talks only to its own origin; the policy makes the
# browser enforce that (and blunts any injection a rendering bug could let through).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # The token may sit in the page URL: never send it elsewhere in a Referer.
    "Referrer-Policy": "no-referrer",
}
# Hashed asset URLs never change content; a stale page is the only thing to avoid.
CACHE_IMMUTABLE = "public, max-age=31536000, immutable"
CACHE_REVALIDATE = "no-cache"


@dataclass(frozen=True)
class Asset:
    """One file, read once at start-up: the files are a few KB and never change while running."""

    body: bytes
    content_type: str
    digest: str

    @property
    def etag(self) -> str:
        """Return the strong entity tag, quoted as HTTP wants it."""
        return f'"{self.digest}"'

    @classmethod
    def of(cls, body: bytes, content_type: str) -> Asset:
        """Wrap ``body`` with a short content hash, used both as ETag and as ``?v=``."""
        return cls(body, content_type, hashlib.sha256(body).hexdigest()[:16])


BOARD = web.AppKey("board", dict[str, Asset])


LINKS_META = '<meta name="kubeprober-links" content="{}">'
"""Where index.html receives the link templates of :mod:`.links`."""


def load_assets(links: BoardLinks) -> dict[str, Asset]:
    """Read the packaged files; ``index.html`` gets hashed asset URLs and ``links`` written
    into it."""
    files = resources.files(__name__)
    assets = {
        name: Asset.of(files.joinpath(name).read_bytes(), ctype)
        for name, ctype in ASSET_TYPES.items()
    }
    page = files.joinpath("index.html").read_text(encoding="utf-8")
    for ref in [f'"board/{name}"' for name in assets] + [LINKS_META]:
        if ref not in page:
            # A renamed asset would otherwise be silently served unversioned (or not at all).
            raise RuntimeError(f"index.html does not hold {ref}")
    for name, asset in assets.items():
        page = page.replace(f'"board/{name}"', f'"board/{name}?v={asset.digest}"')
    config = html.escape(json.dumps(links.page_config(), separators=(",", ":")))
    page = page.replace(LINKS_META, LINKS_META.replace("{}", config))
    assets["index.html"] = Asset.of(page.encode(), "text/html; charset=utf-8")
    return assets


def _respond(request: web.Request, asset: Asset, *, cache_control: str) -> web.Response:
    """Answer with ``asset``, or 304 when the browser already holds this version."""
    headers = {**SECURITY_HEADERS, "Cache-Control": cache_control, "ETag": asset.etag}
    if any(tag.value == asset.digest for tag in request.if_none_match or ()):
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={**headers, "Content-Type": asset.content_type})


async def index(request: web.Request) -> web.Response:
    """Serve the board page."""
    return _respond(request, request.app[BOARD]["index.html"], cache_control=CACHE_REVALIDATE)


async def asset(request: web.Request) -> web.Response:
    """Serve one of the board's static files; immutable when asked for by its current hash."""
    name = request.match_info["name"]
    found = request.app[BOARD].get(name) if name in ASSET_TYPES else None
    if found is None:
        raise web.HTTPNotFound(text=f"no board asset {name!r}\n")
    current = request.query.get("v") == found.digest
    return _respond(request, found, cache_control=CACHE_IMMUTABLE if current else CACHE_REVALIDATE)


def add_routes(app: web.Application, *, links: BoardLinks) -> None:
    """Add ``GET /`` (the board) and ``GET /board/{name}`` (its assets) to ``app``."""
    app[BOARD] = load_assets(links)
    app.router.add_get("/", index)
    app.router.add_get("/board/{name}", asset)
