"""The ``licence`` prober: the licence server accepts connections and greets as it should.

An example of a third-party prober: a module with ``DESCRIPTION``, a frozen dataclass
``Spec`` of its ``with:`` options and ``async def probe(spec, ctx) -> Outcome``, published
under the ``kubeprober.probers`` entry point (see ``pyproject.toml``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from kubeprober.probers.options import option
from kubeprober.probers.sdk import CheckFailed, Context, Outcome

DESCRIPTION = "Prove the licence server accepts connections and greets with its banner."


@dataclass(frozen=True)
class Spec:
    host: str = option("licence server host")
    port: int = option("its port", default=27000, minimum=1, maximum=65535)
    banner: str = option("what its first line starts with; empty: do not read one", default="")


async def probe(spec: Spec, ctx: Context) -> Outcome:
    """Connect, read the first line if a banner is expected, and say what was found."""
    target = f"{spec.host}:{spec.port}"
    with ctx.phase("connect"):
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(spec.host, spec.port), ctx.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise CheckFailed(f"{target}: {exc or 'timed out'}") from exc
    try:
        if not spec.banner:
            return Outcome.passed()
        with ctx.phase("banner"):
            try:
                line = await asyncio.wait_for(reader.readline(), ctx.timeout)
            except (OSError, TimeoutError) as exc:
                raise CheckFailed(f"{target}: no banner: {exc or 'timed out'}") from exc
        text = line.decode(errors="replace").strip()
        if not text.startswith(spec.banner):
            raise CheckFailed(f"{target}: expected a banner starting {spec.banner!r}, got {text!r}")
        return Outcome.passed(text)
    finally:
        writer.close()
