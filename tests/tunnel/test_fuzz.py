"""Property tests: no input can crash the decoder or a session, or reach another session."""

from __future__ import annotations

import asyncio
import logging

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubeprober.tunnel import ProtocolError, Session, TunnelError, memory_pair
from kubeprober.tunnel.frames import FrameType, decode_header, encode_header
from kubeprober.tunnel.opening import encode_open
from tests.tunnel.conftest import FAST
from tests.tunnel.test_session import echo, roundtrip


@given(st.binary(min_size=12, max_size=12))
def test_decoder_accepts_or_rejects_with_protocol_error(raw: bytes) -> None:
    try:
        header = decode_header(raw)
    except ProtocolError:
        return
    assert header.encode() == raw


# Mostly well-formed frames with hostile fields, plus raw junk, so the fuzzer gets past the
# header checks into the stream logic.
_frames = st.builds(
    lambda kind, flags, sid, length, body: encode_header(kind, flags, sid, length) + body,
    st.sampled_from(list(FrameType)),
    st.sampled_from([0, 1, 2, 4, 8, 3, 5, 9, 15]),
    st.sampled_from([0, 1, 2, 3, 5, 2**32 - 1]),
    st.sampled_from([0, 1, 6, 100, 2**18, 2**18 + 1, 2**32 - 1]),
    st.binary(max_size=64),
)
_chunks = st.lists(
    st.one_of(
        _frames, st.binary(max_size=40), st.just(encode_header(0, 1, 1, 6) + encode_open("echo"))
    ),
    max_size=12,
)


class _Crashes(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def _feed(chunks: list[bytes]) -> None:
    crashes = _Crashes()
    logging.getLogger("kubeprober.tunnel").addHandler(crashes)
    try:
        a, _ = memory_pair()  # the other end only collects what the victim sends
        victim = Session(a, False, targets={"echo": echo}, settings=FAST, name="victim")
        c, d = memory_pair()
        healthy_client = Session(c, True, settings=FAST, name="neighbour-client")
        healthy_server = Session(d, False, targets={"echo": echo}, settings=FAST, name="neighbour")
        for session in (victim, healthy_client, healthy_server):
            session.start()
        for chunk in chunks:
            if victim.closed:
                break
            a.feed(chunk)  # as if its peer had sent it
            await asyncio.sleep(0)
        a.feed(b"")  # then the peer hangs up: the victim ends after taking all of it
        async with asyncio.timeout(3):
            await victim.wait_closed()
        assert isinstance(victim.error, TunnelError)
        stream = await healthy_client.open("echo")
        assert await roundtrip(stream, b"unaffected") == b"unaffected"
        async with asyncio.timeout(3):
            for session in (victim, healthy_client, healthy_server):
                await session.close()
        assert victim.num_streams == 0
        assert not crashes.records, [r.getMessage() for r in crashes.records]
    finally:
        logging.getLogger("kubeprober.tunnel").removeHandler(crashes)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_chunks)
def test_malformed_input_closes_only_that_session(chunks: list[bytes]) -> None:
    asyncio.run(_feed(chunks), debug=True)
