"""The OPEN handshake on a fresh stream: ask for a target by name, or answer for one and run it.

Exists so the one rule of ours on top of yamux lives in one place: a stream starts with an OPEN
header, and the receiver answers OK or an error code + text before any data, then a refusal
resets only that stream. Must not allocate streams or touch the session's tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from kubeprober.tunnel.errors import ProtocolError, StreamReset, TargetRefused, TunnelError
from kubeprober.tunnel.opening import (
    ANSWER_PREFIX,
    OpenCode,
    decode_answer_prefix,
    decode_open_prefix,
    decode_target,
    encode_answer,
    encode_open,
)
from kubeprober.tunnel.stream import Stream

log = logging.getLogger("kubeprober.tunnel")

TargetHandler = Callable[[Stream], Awaitable[None]]


def check_name(target: str) -> None:
    """Raise ValueError unless ``target`` is a valid target name."""
    encode_open(target)


async def request(stream: Stream, target: str, *, answer_within: float) -> None:
    """Send the OPEN header, wait for the answer; reset the stream and raise unless OK."""
    try:
        async with asyncio.timeout(answer_within):
            await stream.write(encode_open(target))
            code, size = decode_answer_prefix(await stream.read_exactly(ANSWER_PREFIX))
            text = (await stream.read_exactly(size)).decode("utf-8", "replace")
    except TimeoutError:
        stream.reset()
        raise StreamReset(f"no answer to OPEN {target!r} within {answer_within} s") from None
    except BaseException:
        stream.reset()
        raise
    if code != OpenCode.OK:
        stream.reset()
        raise TargetRefused(code, text)


async def serve(
    stream: Stream, targets: Mapping[str, TargetHandler], *, header_within: float
) -> None:
    """Read the OPEN header of an incoming stream, answer it, run the target's handler."""
    try:
        async with asyncio.timeout(header_within):
            size = decode_open_prefix(await stream.read_exactly(2))
            target = decode_target(await stream.read_exactly(size))
    except ProtocolError as exc:
        await refuse(stream, OpenCode.BAD_REQUEST, str(exc))
        return
    except (TimeoutError, TunnelError):
        stream.reset()
        return
    stream.target = target
    handler = targets.get(target)
    if handler is None:
        await refuse(stream, OpenCode.UNKNOWN_TARGET, f"no target named {target!r}")
        return
    try:
        await stream.write(encode_answer(OpenCode.OK))
        await handler(stream)
        await stream.close()
    except TunnelError:
        stream.reset()
    except Exception:
        log.exception("tunnel target %r failed on stream %d", target, stream.id)
        stream.reset()


async def refuse(stream: Stream, code: OpenCode, text: str) -> None:
    """Answer an OPEN with an error and FIN, then reset only this stream."""
    with contextlib.suppress(TunnelError):
        await stream.write(encode_answer(code, text))
        await stream.close()
    stream.reset()
