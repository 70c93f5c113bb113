"""Sessions and streams: one test body over a memory pipe and a real WebSocket."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from kubeprober.tunnel import (
    ByteBudget,
    OpenCode,
    PeerTimeout,
    ProtocolError,
    SessionClosed,
    Stream,
    StreamReset,
    StreamState,
    TargetRefused,
)
from kubeprober.tunnel.frames import INITIAL_WINDOW, Flag, FrameType, GoAwayCode, Header
from kubeprober.tunnel.opening import decode_answer_prefix, encode_answer, encode_open
from tests.tunnel.conftest import FAST, PairFactory
from tests.tunnel.rawpeer import RawPeer, raw_pair


async def echo(stream: Stream) -> None:
    while data := await stream.read():
        await stream.write(data)


async def sink(stream: Stream) -> None:
    """Accept a stream and never read it."""
    await asyncio.Event().wait()


async def roundtrip(stream: Stream, payload: bytes) -> bytes:
    writer = asyncio.create_task(stream.write(payload))
    got = bytearray()
    while len(got) < len(payload):
        chunk = await stream.read()
        assert chunk, "stream ended early"
        got += chunk
    await writer
    return bytes(got)


@pytest.mark.parametrize("size", [1, 1000, INITIAL_WINDOW, 3 * INITIAL_WINDOW + 17])
@pytest.mark.parametrize("opener", ["client", "server"])
async def test_echo_both_directions(make_pair: PairFactory, size: int, opener: str) -> None:
    client, server = await make_pair(client_targets={"echo": echo}, server_targets={"echo": echo})
    session = client if opener == "client" else server
    stream = await session.open("echo")
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert await roundtrip(stream, payload) == payload
    await stream.close()
    assert await stream.read() == b""
    await asyncio.wait_for(stream.wait_closed(), 2)
    assert stream.state is StreamState.CLOSED
    assert client.num_streams == server.num_streams == 0


async def test_stream_ids_follow_yamux_parity(make_pair: PairFactory) -> None:
    client, server = await make_pair(client_targets={"echo": echo}, server_targets={"echo": echo})
    ids = [(await client.open("echo")).id for _ in range(3)]
    ids += [(await server.open("echo")).id for _ in range(3)]
    assert ids == [1, 3, 5, 2, 4, 6]


async def test_refused_target_ends_only_that_stream(make_pair: PairFactory) -> None:
    client, server = await make_pair(server_targets={"echo": echo})
    kept = await client.open("echo")
    with pytest.raises(TargetRefused) as info:
        await client.open("nope")
    assert info.value.code == OpenCode.UNKNOWN_TARGET
    assert "nope" in info.value.text
    # The opener's RST is queued before this data, so the echo proves the server forgot it.
    assert await roundtrip(kept, b"still here") == b"still here"
    assert not client.closed and not server.closed
    assert client.num_streams == server.num_streams == 1


async def _refusal(peer: RawPeer, stream_id: int) -> tuple[int, str]:
    """Read the receiver's answer on ``stream_id`` and its FIN; return (code, text)."""
    header, body = await peer.wait_for(FrameType.DATA)
    assert header.stream_id == stream_id
    code, size = decode_answer_prefix(body[:3])
    fin, _ = await peer.wait_for(FrameType.WINDOW_UPDATE)
    assert (fin.stream_id, fin.flags) == (stream_id, Flag.FIN)
    return code, body[3 : 3 + size].decode()


async def test_refusal_is_answer_and_fin_then_the_openers_fin_frees_it() -> None:
    session, peer = raw_pair(FAST, client=False, targets={"sink": sink})
    try:
        await peer.frame(FrameType.DATA, Flag.SYN, 1, 6, encode_open("nope"))
        await peer.frame(FrameType.DATA, Flag.NONE, 1, 5, b"extra")  # dropped, not buffered
        assert await _refusal(peer, 1) == (OpenCode.UNKNOWN_TARGET, "no target named 'nope'")
        # A peer reads the refusal at leisure: no RST may come before it closes its side.
        # The ping's answer comes after anything the session sent about the stream meanwhile.
        await peer.frame(FrameType.PING, Flag.SYN, 0, 77)
        seen = await _frames_until_ping_ack(peer, 77)
        assert all(h.stream_id != 1 for h in seen), seen
        assert session.num_streams == 1
        await peer.frame(FrameType.WINDOW_UPDATE, Flag.FIN, 1, 0)
        await peer.frame(FrameType.PING, Flag.SYN, 0, 78)
        seen = await _frames_until_ping_ack(peer, 78)
        assert all(h.stream_id != 1 for h in seen), seen
        assert session.num_streams == 0 and session.budget.used == 0
    finally:
        await session.close()


async def _frames_until_ping_ack(peer: RawPeer, value: int) -> list[Header]:
    """Return the frames the session sent before its answer to our ping ``value``."""
    seen = []
    while True:
        header, _ = await peer.next_frame()
        if header.type is FrameType.PING and (header.flags, header.length) == (Flag.ACK, value):
            return seen
        if header.type is not FrameType.PING:
            seen.append(header)


@pytest.mark.parametrize(
    ("opening", "answer"),
    [
        (encode_open("nope"), (OpenCode.UNKNOWN_TARGET, "no target named 'nope'")),
        (b"", (OpenCode.BAD_REQUEST, "no OPEN header within 0.5 s")),
        (b"\x02\x04sink", (OpenCode.BAD_REQUEST, "unsupported OPEN version 2")),
    ],
    ids=["unknown-target", "no-header", "bad-header"],
)
async def test_an_opener_that_never_closes_is_reset_after_open_timeout(
    opening: bytes, answer: tuple[int, str]
) -> None:
    # The raw peer answers no pings: keep the session from declaring it dead meanwhile.
    settings = dataclasses.replace(
        FAST, ping_interval=60.0, dead_peer_timeout=60.0, open_timeout=0.5
    )
    session, peer = raw_pair(settings, client=False, targets={"sink": sink})
    try:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        if opening:
            await peer.frame(FrameType.DATA, Flag.SYN, 1, len(opening), opening)
        else:
            await peer.frame(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0)
        assert await _refusal(peer, 1) == answer
        header, _ = await peer.wait_for(FrameType.WINDOW_UPDATE)
        assert (header.stream_id, header.flags) == (1, Flag.RST)
        waited = 2 if not opening else 1  # the header's wait, then the linger
        assert loop.time() - sent >= waited * settings.open_timeout
        assert session.num_streams == 0 and not session.closed
    finally:
        await session.close()


async def test_credit_is_granted_only_as_data_is_read(make_pair: PairFactory) -> None:
    accepted: asyncio.Queue[Stream] = asyncio.Queue()

    async def hold(stream: Stream) -> None:
        accepted.put_nowait(stream)
        await asyncio.Event().wait()

    # yamux's own window, never grown: the Go peer's default behaviour
    settings = dataclasses.replace(FAST, stream_window=INITIAL_WINDOW)
    client, _ = await make_pair(server_targets={"hold": hold}, settings=settings)
    stream = await client.open("hold")
    remote = await accepted.get()
    # Exactly one window fits (the OPEN header used the first bytes); more must wait.
    await asyncio.wait_for(stream.write(b"a" * (INITIAL_WINDOW - len(encode_open("hold")))), 2)
    blocked = asyncio.create_task(stream.write(b"b" * 1000))
    # A grant queued before the ping's answer arrives before it: none came.
    await client.ping()
    assert (stream.send_credit, blocked.done()) == (0, False)
    # Reading less than half a window grants nothing yet (credit is batched, like yamux).
    assert len(await remote.read(1000)) == 1000
    await client.ping()
    assert (stream.send_credit, blocked.done()) == (0, False)
    got = 1000 + len(encode_open("hold"))
    while got < INITIAL_WINDOW // 2:
        got += len(await remote.read(INITIAL_WINDOW // 2 - got))
    await asyncio.wait_for(blocked, 2)


@pytest.mark.parametrize("window", [INITIAL_WINDOW, 3 * INITIAL_WINDOW, 16 * INITIAL_WINDOW])
async def test_receiver_grows_the_window_to_its_setting(
    make_pair: PairFactory, window: int
) -> None:
    accepted: asyncio.Queue[Stream] = asyncio.Queue()

    async def hold(stream: Stream) -> None:
        accepted.put_nowait(stream)
        await asyncio.Event().wait()

    settings = dataclasses.replace(FAST, stream_window=window)
    client, _ = await make_pair(server_targets={"hold": hold}, settings=settings)
    stream = await client.open("hold")
    await accepted.get()
    # The OPEN header's few bytes are re-granted or not depending on how reads batch; the
    # window itself must be what the receiver's settings say, within those bytes.
    await asyncio.wait_for(stream.write(b"g" * (window - 64)), 2)
    blocked = asyncio.create_task(stream.write(b"!" * 128))
    await client.ping()  # a grant queued before the ping's answer arrives before it
    assert (stream.send_credit, blocked.done()) == (0, False)  # not more than it granted
    blocked.cancel()
    await asyncio.gather(blocked, return_exceptions=True)


async def test_write_waits_watch_the_timer(make_pair: PairFactory) -> None:
    settings = dataclasses.replace(FAST, write_timeout=0.3, stream_window=INITIAL_WINDOW)
    client, _ = await make_pair(server_targets={"sink": sink}, settings=settings)
    stream = await client.open("sink")
    with pytest.raises(StreamReset, match="credit"):
        await asyncio.wait_for(stream.write(b"z" * (INITIAL_WINDOW + 1)), 3)
    assert stream.state is StreamState.RESET


async def test_session_close_wakes_readers_and_writers(make_pair: PairFactory) -> None:
    client, server = await make_pair(server_targets={"sink": sink})
    stream = await client.open("sink")
    reader = asyncio.create_task(stream.read())
    writer = asyncio.create_task(stream.write(b"w" * (2 * FAST.stream_window)))
    await client.ping()  # both are waiting by now: for data, for credit
    assert not reader.done() and not writer.done()
    await server.close()
    for task in (reader, writer):
        with pytest.raises(SessionClosed):
            await asyncio.wait_for(task, 2)
    await asyncio.wait_for(client.wait_closed(), 2)
    with pytest.raises(SessionClosed):
        await client.open("sink")


async def test_ping_measures_a_round_trip(make_pair: PairFactory) -> None:
    client, server = await make_pair()
    assert 0 <= await client.ping() < 1
    assert 0 <= await server.ping() < 1


async def test_session_budget_resets_the_overflowing_stream_only(make_pair: PairFactory) -> None:
    accepted: asyncio.Queue[Stream] = asyncio.Queue()

    async def hold(stream: Stream) -> None:
        accepted.put_nowait(stream)
        await asyncio.Event().wait()

    settings = dataclasses.replace(
        FAST, session_buffer=INITIAL_WINDOW + 1000, stream_window=INITIAL_WINDOW
    )
    client, server = await make_pair(server_targets={"hold": hold, "echo": echo}, settings=settings)
    first, second = await client.open("hold"), await client.open("hold")
    fill = INITIAL_WINDOW - len(encode_open("hold"))
    await first.write(b"1" * fill)
    await second.write(b"2" * fill)
    held = [await accepted.get(), await accepted.get()]
    waits = [asyncio.create_task(s.wait_closed()) for s in held]
    done, pending = await asyncio.wait(waits, timeout=2, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    assert done, "no stream was reset"
    await client.ping()  # anything else the budget did to the other stream is done by now
    states = sorted(s.state.value for s in held)
    assert states == ["established", "reset"]
    assert not server.closed
    assert await roundtrip(await client.open("echo"), b"ok") == b"ok"


async def test_process_budget_is_shared_between_sessions() -> None:
    shared = ByteBudget(1000)
    session, peer = raw_pair(FAST, client=False, targets={"sink": sink}, budget=shared)
    try:
        await peer.frame(FrameType.DATA, Flag.SYN, 1, 6, encode_open("sink"))
        await peer.wait_for(FrameType.DATA)  # the OK answer
        await peer.frame(FrameType.DATA, Flag.NONE, 1, 2000, b"x" * 2000)
        header, _ = await peer.wait_for(FrameType.WINDOW_UPDATE)
        assert header.flags & Flag.RST and header.stream_id == 1
        assert shared.used == 0
        assert not session.closed
    finally:
        await session.close()


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        # 256 KiB + 1 on a fresh stream: more than the window we granted
        ([(FrameType.DATA, Flag.SYN, 1, INITIAL_WINDOW + 1)], "exceed"),
        # more than any window at all
        ([(FrameType.DATA, Flag.SYN, 1, 2**32 - 1)], "exceeds any window"),
        # a second SYN for a live stream
        ([(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0)] * 2, "duplicate"),
        # the client opening an even (server-side) stream id
        ([(FrameType.WINDOW_UPDATE, Flag.SYN, 2, 0)], "parity"),
        # window overflow past 2**32-1
        (
            [(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0), (FrameType.WINDOW_UPDATE, 0, 1, 2**32 - 1)],
            "overflow",
        ),
        # an unknown frame type
        ([(7, 0, 0, 0)], "frame type"),
    ],
)
async def test_protocol_violations_send_go_away(
    frames: list[tuple[int, int, int, int]], error: str
) -> None:
    session, peer = raw_pair(FAST, client=False, targets={"sink": sink})
    for kind, flags, sid, length in frames:
        await peer.frame(
            kind, flags, sid, length, b"\0" * min(length, INITIAL_WINDOW + 1) if kind == 0 else b""
        )  # type: ignore[arg-type]
    header, _ = await peer.wait_for(FrameType.GO_AWAY)
    assert header.length == GoAwayCode.PROTOCOL_ERROR
    await asyncio.wait_for(session.wait_closed(), 2)
    assert isinstance(session.error, ProtocolError)
    assert error in str(session.error)


async def test_silent_peer_is_declared_dead() -> None:
    session, peer = raw_pair(FAST)
    frames = []
    with pytest.raises(EOFError):  # the session gives up and closes the transport
        while True:
            frames.append(await peer.next_frame())
    assert isinstance(session.error, PeerTimeout)
    await asyncio.wait_for(session.wait_closed(), 2)
    pings = [h for h, _ in frames if h.type is FrameType.PING and h.flags == Flag.SYN]
    assert pings, "no ping was sent before giving up"


async def test_frames_split_at_every_byte_are_reassembled() -> None:
    session, peer = raw_pair(FAST, client=False, targets={"echo": echo})
    try:
        wire = b"".join(
            [
                bytes.fromhex("000000010000000100000006") + encode_open("echo"),
                bytes.fromhex("000000000000000100000005") + b"hello",
                bytes.fromhex("000200010000000000000009"),  # ping 9
            ]
        )
        for i in range(len(wire)):
            await peer.send(wire[i : i + 1])
        seen: list[tuple[FrameType, Flag, bytes]] = []
        while len(seen) < 4:
            header, body = await peer.next_frame()
            if header.type is FrameType.WINDOW_UPDATE:
                body = b""  # the grant's size depends on how reads batch
            elif header.type is FrameType.PING:
                if header.flags == Flag.SYN:
                    continue  # the session's own keepalive
                body = header.length.to_bytes(4)
            seen.append((header.type, header.flags, body))
        # The first frame back on the stream carries ACK: the grant that grows the window.
        assert seen[0][:2] == (FrameType.WINDOW_UPDATE, Flag.ACK) or seen[0][0] is FrameType.PING
        assert sorted(seen) == sorted(
            [
                (FrameType.DATA, Flag.NONE, b"hello"),
                (FrameType.DATA, Flag.NONE, encode_answer(OpenCode.OK)),
                (FrameType.WINDOW_UPDATE, Flag.ACK, b""),
                (FrameType.PING, Flag.ACK, (9).to_bytes(4)),
            ]
        )
    finally:
        await session.close()


async def test_peer_go_away_normal_stops_new_streams_only(make_pair: PairFactory) -> None:
    client, server = await make_pair(server_targets={"echo": echo})
    stream = await client.open("echo")
    server.send_control(bytes.fromhex("000300000000000000000000"))
    await server.ping()  # the client answers it after taking the GoAway queued before it
    with pytest.raises(SessionClosed, match="going away"):
        await client.open("echo")
    assert await roundtrip(stream, b"still") == b"still"


async def test_too_many_streams_are_refused_with_rst() -> None:
    settings = dataclasses.replace(FAST, max_streams=1)
    session, peer = raw_pair(settings, client=False, targets={"sink": sink})
    try:
        await peer.frame(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0)
        await peer.frame(FrameType.WINDOW_UPDATE, Flag.SYN, 3, 0)
        header, _ = await peer.wait_for(FrameType.WINDOW_UPDATE)
        assert (header.stream_id, header.flags) == (3, Flag.RST)
        assert not session.closed and session.num_streams == 1
    finally:
        await session.close()
