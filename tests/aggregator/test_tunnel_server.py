"""The tunnel endpoint: tokens, authentication before the upgrade, replacement, 503s."""

from __future__ import annotations

import asyncio
import pathlib
import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest

from kubeprober.aggregator.tokens import (
    InvalidToken,
    TokenStore,
    hash_secret,
    new_token,
    parse_token,
)
from kubeprober.aggregator.tunnel_server import MAX_EVENT, PATH, TunnelServerSettings
from kubeprober.tunnel import SUBPROTOCOL, Session, StreamReset, WebSocketTransport
from tests.tunnel.harness import SESSION, Aggregator, Tls, make_tls, wait_until

MOON = new_token("moon")
MOON_NEXT = new_token("moon")
MARS = new_token("mars")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "kp1",
        "kp2.moon.abcdefghijklmnopqrstuvwxyz",
        "kp1.Moon.abcdefghijklmnopqrstuvwxyz",
        "kp1.moon.short",
        "kp1.moon.abcdefghijklmnop.qrstuvwxyz",
        "kp1..abcdefghijklmnopqrstuvwxyz",
        "kp1.moon.abcdefghijklmnop qrstuvwxyz",
    ],
)
def test_malformed_tokens_are_rejected(text: str) -> None:
    with pytest.raises(InvalidToken):
        parse_token(text)


def test_store_keeps_hashes_only() -> None:
    store = TokenStore()
    store.set("moon", str(MOON), previous=str(MOON_NEXT))
    assert MOON.secret not in repr(vars(store))
    assert MOON.secret not in repr(MOON)
    assert hash_secret(MOON.secret) != hash_secret(MOON_NEXT.secret)


def test_store_refuses_a_token_for_another_cluster() -> None:
    with pytest.raises(InvalidToken):
        TokenStore().set("moon", str(MARS))


@pytest.mark.parametrize(
    ("token", "cluster"),
    [
        (str(MOON), "moon"),
        (str(MARS), None),  # mars is not registered
        (f"kp1.mars.{MOON.secret}", None),  # moon's secret presented for mars
        ("not-a-token", None),
    ],
)
def test_verify(token: str, cluster: str | None) -> None:
    store = TokenStore()
    store.set("moon", str(MOON))
    assert store.verify(token) == cluster


@pytest.fixture
async def aggregator(tmp_path: pathlib.Path) -> AsyncIterator[Aggregator]:
    agg = Aggregator(make_tls(tmp_path))
    agg.tokens.set("moon", str(MOON))
    agg.tokens.set("mars", str(MARS))
    await agg.start()
    try:
        yield agg
    finally:
        await agg.stop()


def _client_ssl(tls: Tls) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls.ca_file))


async def _dial(
    agg: Aggregator,
    http: aiohttp.ClientSession,
    token: str,
    *,
    protocols: tuple[str, ...] = (SUBPROTOCOL,),
) -> aiohttp.ClientWebSocketResponse:
    return await http.ws_connect(
        f"wss://127.0.0.1:{agg.port}{PATH}",
        protocols=protocols,
        headers={"Authorization": f"Bearer {token}"},
        ssl=_client_ssl(agg.tls),
    )


VENUS = new_token("venus")


@pytest.mark.parametrize(
    ("case", "header", "logged"),
    [
        ("no token", None, "a request without a bearer token"),
        ("other scheme", f"Basic {MOON}", "a request without a bearer token"),
        ("garbage", "Bearer not-a-token", "a malformed token"),
        ("unknown cluster", f"Bearer {VENUS}", "cluster venus (no such cluster defined)"),
        ("wrong secret", f"Bearer {new_token('moon')}", "cluster moon (wrong secret)"),
        ("another's secret", f"Bearer kp1.moon.{MARS.secret}", "cluster moon (wrong secret)"),
    ],
)
async def test_bad_tokens_get_401_and_register_nothing(
    aggregator: Aggregator,
    caplog: pytest.LogCaptureFixture,
    case: str,
    header: str | None,
    logged: str,
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(
                f"wss://127.0.0.1:{aggregator.port}{PATH}",
                protocols=(SUBPROTOCOL,),
                headers=headers,
                ssl=_client_ssl(aggregator.tls),
            )
    assert info.value.status == 401, case
    assert aggregator.server is not None and aggregator.server.clusters == []
    refusals = [r.getMessage() for r in caplog.records if "tunnel: refused" in r.getMessage()]
    assert len(refusals) == 1 and logged in refusals[0], refusals
    secret = (header or "").rpartition(".")[2]
    assert len(secret) < 16 or secret not in refusals[0]


@pytest.mark.parametrize(
    ("header", "answer"),
    [
        (None, "tunnel token required"),
        ("Basic abc", "tunnel token required"),
        (f"Bearer {VENUS}", "invalid tunnel token"),
    ],
)
async def test_a_refusal_says_whether_the_token_was_missing_or_wrong(
    aggregator: Aggregator, header: str | None, answer: str
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"https://127.0.0.1:{aggregator.port}{PATH}",
            headers=headers,
            ssl=_client_ssl(aggregator.tls),
        ) as resp,
    ):
        assert resp.status == 401
        assert await resp.text() == answer + "\n"


async def test_bearer_scheme_is_case_insensitive(aggregator: Aggregator) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(
            f"wss://127.0.0.1:{aggregator.port}{PATH}",
            protocols=(SUBPROTOCOL,),
            headers={"Authorization": f"bEARER {MOON}"},
            ssl=_client_ssl(aggregator.tls),
        )
        await ws.close()


async def test_rotation_accepts_previous_token_once_then_refuses_it(
    aggregator: Aggregator,
) -> None:
    async with aiohttp.ClientSession() as http:
        aggregator.tokens.set("moon", str(MOON_NEXT), previous=str(MOON))
        for token in (MOON, MOON_NEXT):  # both slots work during the rotation
            ws = await _dial(aggregator, http, str(token))
            await ws.close()
        aggregator.tokens.set("moon", str(new_token("moon")), previous=str(MOON_NEXT))
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await _dial(aggregator, http, str(MOON))
        assert info.value.status == 401


@pytest.mark.parametrize(
    ("token", "status"),
    [(MOON, 400), (MOON_NEXT, 401)],  # MOON_NEXT: not this fixture's secret
    ids=["good-token-400", "token-checked-first-401"],
)
async def test_subprotocol_is_required_after_the_token(
    aggregator: Aggregator, token: object, status: int
) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await _dial(aggregator, http, str(token), protocols=())
    assert info.value.status == status


async def test_newer_session_replaces_older(aggregator: Aggregator) -> None:
    assert aggregator.server is not None
    async with aiohttp.ClientSession() as http:
        first = await _dial(aggregator, http, str(MOON))
        await wait_until(lambda: aggregator.server.session("moon") is not None, 2, "first")  # type: ignore[union-attr]
        old = aggregator.server.session("moon")
        second = await _dial(aggregator, http, str(MOON))
        await wait_until(lambda: old is not None and old.closed, 2, "old session closed")
        new = aggregator.server.session("moon")
        assert new is not None and new is not old
        # The first agent is told to go away (GoAway NORMAL, then the socket closes).
        msg = await asyncio.wait_for(first.receive(), 2)
        assert msg.type is aiohttp.WSMsgType.BINARY and msg.data[:4] == bytes([0, 3, 0, 0])
        assert aggregator.server.clusters == ["moon"]
        await second.close()
        await first.close()
    await wait_until(lambda: aggregator.server.clusters == [], 2, "unregistered")  # type: ignore[union-attr]


async def test_handshake_limit_answers_503_with_retry_after(tmp_path: pathlib.Path) -> None:
    agg = Aggregator(
        make_tls(tmp_path), settings=TunnelServerSettings(max_handshakes=0, retry_after=7)
    )
    agg.tokens.set("moon", str(MOON))
    await agg.start()
    try:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await _dial(agg, http, str(MOON))
        assert info.value.status == 503
        assert info.value.headers is not None and info.value.headers["Retry-After"] == "7"
        assert agg.server is not None and agg.server.clusters == []
    finally:
        await agg.stop()


async def test_handshakes_in_progress_are_counted(aggregator: Aggregator) -> None:
    """A storm of dials: with a limit of 2, some get 503, none hang, all end unregistered."""
    assert aggregator.server is not None
    aggregator.server.settings = TunnelServerSettings(max_handshakes=2, session=SESSION)
    async with aiohttp.ClientSession() as http:

        async def dial() -> int:
            try:
                ws = await _dial(aggregator, http, str(MOON))
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status
            await ws.close()
            return 101

        statuses = await asyncio.gather(*(dial() for _ in range(20)))
    assert set(statuses) <= {101, 503}
    assert 101 in statuses
    await wait_until(lambda: aggregator.server.clusters == [], 2, "unregistered")  # type: ignore[union-attr]


async def test_events_deliver_json_objects_and_skip_the_rest(aggregator: Aggregator) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await _dial(aggregator, http, str(MOON))
        session = Session(WebSocketTransport(ws), True, settings=SESSION)
        session.start()
        try:
            events = await session.open("events")
            await events.write(b'{"kind":"a"}\nnot json\n[1,2]\n\n{"kind":')
            await events.write(b'"b"}\n')
            await wait_until(lambda: len(aggregator.events) == 2, 2, "two events")
            assert aggregator.events == [("moon", {"kind": "a"}), ("moon", {"kind": "b"})]
            # A line that never ends is cut off: that stream only.
            with pytest.raises(StreamReset):
                for _ in range(4):
                    await events.write(b"x" * MAX_EVENT)
                    await asyncio.sleep(0.05)
            again = await session.open("events")
            await again.write(b'{"kind":"c"}\n')
            await wait_until(lambda: len(aggregator.events) == 3, 2, "third event")
        finally:
            await session.close()
