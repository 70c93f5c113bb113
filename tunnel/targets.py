"""The OPEN handshake on a fresh stream: ask for a target by name, or answer for one and run it.

Exists so the one rule of ours on top of yamux lives in one place: a stream starts with an OPEN
header, and the receiver answers OK or an error code + text before any data. A refusal is the
answer and FIN, never RST: hashicorp/yamux drops unread data on RST, so a Go opener would never
read why. Must not allocate streams or touch the session's tables.
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
    stream: Stream, targets: Mapping[str, TargetHandler], *, open_timeout: float
) -> None:
    """Read the OPEN header of an incoming stream, answer it, run the target's handler."""
    try:
        async with asyncio.timeout(open_timeout):
            size = decode_open_prefix(await stream.read_exactly(2))
            target = decode_target(await stream.read_exactly(size))
    except ProtocolError as exc:
        await refuse(stream, OpenCode.BAD_REQUEST, str(exc), linger=open_timeout)
        return
    except TimeoutError:
        text = f"no OPEN header within {open_timeout:g} s"
        await refuse(stream, OpenCode.BAD_REQUEST, text, linger=open_timeout)
        return
    except TunnelError:
        stream.reset()
        return
    stream.target = target
    handler = targets.get(target)
    if handler is None:
        text = f"no target named {target!r}"
        await refuse(stream, OpenCode.UNKNOWN_TARGET, text, linger=open_timeout)
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


async def refuse(stream: Stream, code: OpenCode, text: str, *, linger: float) -> None:
    """Answer an OPEN with an error and FIN; free the stream once the opener closes its side.

    What the opener sent after its OPEN header is read and dropped meanwhile. An opener that
    neither closes nor resets within ``linger`` seconds gets RST, long after it could read.
    """
    with contextlib.suppress(TunnelError, TimeoutError):
        await stream.write(encode_answer(code, text))
        await stream.close()
        async with asyncio.timeout(linger):
            while await stream.read():
                pass
    stream.reset()  # nothing to do once the opener's FIN closed the stream
