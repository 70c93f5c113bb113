"""A container probe: log in to the shop and place an order, then report both checks.

Runs in its own pod, once per scheduled run of the Probe in probe.yaml. The agent gives the
pod where to report and until when (KUBEPROBER_REPORT_URL, KUBEPROBER_RUN_TOKEN,
KUBEPROBER_DEADLINE); the SDK does the rest. Try it anywhere with KUBEPROBER_DRY_RUN=1.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

from kubeprober.probers.container_sdk import report, run_checks
from kubeprober.probers.sdk import CheckFailed, Outcome

SHOP = os.environ.get("SHOP_URL", "http://shop.shop.svc:8080")
USER = os.environ.get("SHOP_USER", "probe")
SLOW = 2.0
"""Seconds an order may take before it is a warning."""


def call(path: str, body: dict[str, str], token: str = "") -> dict[str, str]:
    """POST JSON to the shop; raise CheckFailed for anything but a 2xx JSON answer."""
    request = urllib.request.Request(
        SHOP + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return dict(json.load(answer))
    except urllib.error.HTTPError as exc:
        raise CheckFailed(f"POST {path}: HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise CheckFailed(f"POST {path}: {exc}") from None


def login() -> str:
    """Log in as the probe's user; return the session token."""
    token = call("/login", {"user": USER}).get("token")
    if not token:
        raise CheckFailed("POST /login: no token in the answer")
    return token


def logs_in() -> None:
    """The login check: a session token comes back."""
    login()


def order() -> Outcome:
    """Log in, place an order for the probe's test item, and time it."""
    token = login()
    start = time.monotonic()
    placed = call("/orders", {"item": "probe-item"}, token)
    took = time.monotonic() - start
    if placed.get("status") != "placed":
        raise CheckFailed(f"order not placed: {placed}")
    return Outcome.warn(f"order took {took:.1f}s") if took > SLOW else Outcome.passed()


if __name__ == "__main__":
    report(*run_checks({"login": logs_in, "order": order}, timeout=20))
