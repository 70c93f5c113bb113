"""Wire constants pinned to hashicorp/yamux's values, and the header codec."""

from __future__ import annotations

import pytest

from kubeprober.tunnel import ProtocolError
from kubeprober.tunnel.frames import (
    HEADER_SIZE,
    INITIAL_WINDOW,
    VERSION,
    Flag,
    FrameType,
    GoAwayCode,
    Header,
    decode_header,
    encode_header,
)
from kubeprober.tunnel.opening import (
    OpenCode,
    decode_answer_prefix,
    decode_open_prefix,
    decode_target,
    encode_answer,
    encode_open,
)
from kubeprober.tunnel.settings import SUBPROTOCOL
from kubeprober.tunnel.token import parse_token


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (VERSION, 0),
        (HEADER_SIZE, 12),
        (INITIAL_WINDOW, 262144),
        (FrameType.DATA, 0),
        (FrameType.WINDOW_UPDATE, 1),
        (FrameType.PING, 2),
        (FrameType.GO_AWAY, 3),
        (Flag.SYN, 1),
        (Flag.ACK, 2),
        (Flag.FIN, 4),
        (Flag.RST, 8),
        (GoAwayCode.NORMAL, 0),
        (GoAwayCode.PROTOCOL_ERROR, 1),
        (GoAwayCode.INTERNAL_ERROR, 2),
        (OpenCode.OK, 0),
        (OpenCode.UNKNOWN_TARGET, 1),
        (OpenCode.REFUSED, 2),
        (OpenCode.BAD_REQUEST, 3),
        (OpenCode.INTERNAL, 4),
        (SUBPROTOCOL, "kubeprober.v1"),
    ],
)
def test_wire_constants_are_pinned(value: object, expected: object) -> None:
    assert value == expected


@pytest.mark.parametrize(
    ("header", "wire"),
    [
        (Header(FrameType.DATA, Flag.SYN, 1, 5), "00 00 0001 00000001 00000005"),
        (
            Header(FrameType.WINDOW_UPDATE, Flag.ACK | Flag.FIN, 2, 0),
            "00 01 0006 00000002 00000000",
        ),
        (Header(FrameType.WINDOW_UPDATE, Flag.RST, 7, 0), "00 01 0008 00000007 00000000"),
        (Header(FrameType.PING, Flag.SYN, 0, 0xDEADBEEF), "00 02 0001 00000000 deadbeef"),
        (Header(FrameType.GO_AWAY, Flag.NONE, 0, 1), "00 03 0000 00000000 00000001"),
        (Header(FrameType.DATA, Flag.NONE, 0xFFFFFFFF, 262144), "00 00 0000 ffffffff 00040000"),
    ],
)
def test_header_round_trip(header: Header, wire: str) -> None:
    raw = bytes.fromhex(wire.replace(" ", ""))
    assert header.encode() == raw
    assert decode_header(raw) == header


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("01 00 0000 00000001 00000000", "version"),
        ("00 04 0000 00000001 00000000", "type"),
        ("00 00 0010 00000001 00000000", "flags"),
        ("00 02 0001 00000003 00000000", "PING on stream"),
        ("00 03 0000 00000001 00000000", "GO_AWAY on stream"),
        ("00 00 0000 00000000 00000000", "DATA on stream 0"),
        ("00 01 0001 00000000 00000000", "WINDOW_UPDATE on stream 0"),
        ("00 00 0000 00000001", "12 bytes"),
    ],
)
def test_bad_headers_are_protocol_errors(wire: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_header(bytes.fromhex(wire.replace(" ", "")))


def test_encode_header_is_big_endian() -> None:
    assert encode_header(FrameType.DATA, Flag.FIN, 0x01020304, 0x0A0B0C0D) == bytes(
        [0, 0, 0, 4, 1, 2, 3, 4, 10, 11, 12, 13]
    )


@pytest.mark.parametrize(
    ("target", "wire"),
    [("agent", b"\x01\x05agent"), ("events", b"\x01\x06events"), ("a-1", b"\x01\x03a-1")],
)
def test_open_request(target: str, wire: bytes) -> None:
    assert encode_open(target) == wire
    assert decode_open_prefix(wire[:2]) == len(target)
    assert decode_target(wire[2:]) == target


@pytest.mark.parametrize("target", ["", "Agent", "a b", "x" * 65, "é", "../etc"])
def test_bad_target_names_are_rejected(target: str) -> None:
    with pytest.raises(ValueError):
        encode_open(target)


@pytest.mark.parametrize(
    "prefix", [b"\x02\x05", b"\x01\x00", b"\x01\x41", b"\x01"], ids=["version", "0", "65", "short"]
)
def test_bad_open_prefix(prefix: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_open_prefix(prefix)


@pytest.mark.parametrize(
    ("code", "text", "wire"),
    [
        (OpenCode.OK, "", b"\x00\x00\x00"),
        (OpenCode.UNKNOWN_TARGET, "no", b"\x01\x00\x02no"),
        (OpenCode.REFUSED, "x" * 2000, b"\x02\x04\x00" + b"x" * 1024),
    ],
)
def test_open_answer(code: OpenCode, text: str, wire: bytes) -> None:
    assert encode_answer(code, text) == wire
    assert decode_answer_prefix(wire[:3]) == (code, len(wire) - 3)


def test_answer_text_longer_than_limit_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_answer_prefix(b"\x01\x04\x01")


@pytest.mark.parametrize(
    ("text", "cluster"),
    [
        ("kp1.moon.abcdefghijklmnopqrstuvwxyz\n", "moon"),
        ("kp1.a-1.ABCDEFGHIJKLMNOP_-", "a-1"),
    ],
)
def test_token_format_is_shared_by_both_ends(text: str, cluster: str) -> None:
    token = parse_token(text)
    assert token.cluster == cluster
    assert str(token) == text.strip()
    assert token.secret not in repr(token)
