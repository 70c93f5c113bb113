"""atheris target: the tunnel's frame header decoder, under coverage-guided fuzzing.

Run as a script (``python tests/reliability/fuzz_frames.py -max_total_time=3``): any input
is a header or a ProtocolError, and a decoded header encodes back to the same bytes.
"""

from __future__ import annotations

import sys

import atheris

from kubeprober.tunnel.errors import ProtocolError
from kubeprober.tunnel.frames import decode_header

# Only the decoder is instrumented: instrumenting the imports (aiohttp and all) takes ~10 s.
decode_header = atheris.instrument_func(decode_header)


def test_one_input(data: bytes) -> None:
    """Decode ``data`` as a header; anything but a ProtocolError is a finding."""
    try:
        header = decode_header(data)
    except ProtocolError:
        return
    if header.encode() != data:
        raise AssertionError(f"{data!r} decoded to {header} which encodes differently")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
