"""The aggregator process: settings checked, state loaded, the API served, loops run, stopped.

:func:`run_aggregator` is what ``kubeprober aggregator`` runs: it loads the fleet (the clusters
file, or Kubernetes mode's watches), serves :mod:`.api` with the tunnel endpoint, runs the pull
rounds and the reload loop, and on SIGTERM/SIGINT closes every session and shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import ssl
from collections.abc import Callable

from aiohttp import web

from kubeprober.aggregator import auth
from kubeprober.aggregator.api import make_app
from kubeprober.aggregator.state import Aggregator, AggregatorSettings
from kubeprober.http_log import SERVER_LOG
from kubeprober.http_server import CappedSite, default_max_connections
from kubeprober.tunnel.http.serve import IDLE_TIMEOUT

log = logging.getLogger(__name__)
KUBE_START_WAIT = 5.0
"""Seconds Kubernetes mode waits for its first fleet before listening anyway (not ready)."""


GC_THRESHOLDS = (50_000, 20, 100)
"""The aggregator process's garbage-collector thresholds (CPython's default: 700, 10, 10)."""


def tune_gc() -> None:
    """Collect garbage less often than CPython would by default, for the aggregator's heap.

    The aggregator keeps a few hundred long-lived objects per cluster (sessions, streams,
    tasks, reports) and replaces each cluster's report on every pull. With the default
    thresholds that churn set off one or two full collections per pull round, each walking
    the whole heap: at 2,000 clusters 0.5-0.9 s of a 2 s round (bench/fleet.py prints the
    collections). A young generation of 50,000 objects lets a round's short-lived objects die
    by reference count before a collection promotes them, and a full collection waits for 100
    middle-generation passes; cyclic garbage is still collected, only later.
    """
    gc.set_threshold(*GC_THRESHOLDS)


async def run_aggregator(
    settings: AggregatorSettings,
    *,
    on_listening: Callable[[str], None] = lambda url: None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop``), then close every session and shut down."""
    agg = Aggregator(settings)
    if settings.kube is None:
        agg.reload()  # a missing or broken file fails here, before anything listens
        agg.ready = True
    read_token = None
    if settings.read_token_file is not None:
        read_token = settings.read_token_file.read_text().strip()
        if not read_token:  # an empty token must not silently turn the guard off
            raise ValueError(f"read token file {settings.read_token_file} is empty")
    operators = None
    if settings.operator_tokens_file is not None:
        operators = agg.operators = auth.OperatorTokensFile(settings.operator_tokens_file)
    exposed = auth.open_reads_warning(settings.host, read_token=read_token)
    if exposed:
        log.warning("%s", exposed)
    if operators is None:
        log.info("the run API is off: no --operator-tokens file")
    tls = None
    if settings.tls_cert is not None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(settings.tls_cert, settings.tls_key)
        except ssl.SSLError:  # OpenSSL says only "PEM lib": name the files instead
            raise ValueError(
                f"TLS certificate {settings.tls_cert} and key {settings.tls_key}: not a PEM "
                "certificate chain and its private key"
            ) from None
    if settings.kube is not None:
        from kubeprober.aggregator.kube.mode import (
            KubeRegistry,  # the client's import costs a second
        )

        agg.kube = KubeRegistry.connect(
            settings.kube, lambda: agg.views.values(), ttl=settings.offline_after
        )
        await agg.kube.start()
        # An API server that is away (or slow) now is no reason not to start: serve, not
        # ready yet; the watches keep trying and the reload loop takes the fleet when listed.
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KUBE_START_WAIT):
                    await agg.kube.wait_loaded()
        except BaseException:  # cancelled before serving: the watches must not outlive us
            await agg.kube.stop()
            raise
        await agg.refresh()
        agg.ready = agg.kube.loaded
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    puller = agg.connect_puller()
    runner = web.AppRunner(
        make_app(agg, read_token=read_token, operators=operators),
        handle_signals=False,
        access_log=None,
        logger=SERVER_LOG,
        # a client that goes away cancels its handler: a proxied watch must not outlive it
        handler_cancellation=True,
        keepalive_timeout=IDLE_TIMEOUT,
    )
    await runner.setup()
    tasks: list[asyncio.Task[None]] = []
    try:
        await CappedSite(
            runner,
            settings.host,
            settings.port,
            ssl_context=tls,
            max_connections=settings.max_connections or default_max_connections(),
        ).start()
        host, port = runner.addresses[0][:2]
        scheme = "https" if tls else "http"
        url = f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}"
        on_listening(url)
        if agg.kube is not None:
            agg.kube.join(advertised(url, host))
        tasks = [
            asyncio.create_task(puller.run_rounds(), name="pull-rounds"),
            asyncio.create_task(puller.run_pokes(), name="pull-pokes"),
            asyncio.create_task(_reload_loop(agg), name="clusters-reload"),
        ]
        await stop.wait()
        log.info("shutting down")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()  # sends GoAway on every tunnel session (tunnel on_shutdown)
        agg.agents.close()
        if agg.kube is not None:
            await agg.kube.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def advertised(url: str, host: str) -> str:
    """The URL other replicas reach this one at: ``url``, with the host's own address in
    place of a wildcard one (a pod's IP)."""
    if host not in ("0.0.0.0", "::"):
        return url
    own = socket.gethostbyname(socket.gethostname())
    return url.replace(f"[{host}]" if ":" in host else host, own, 1)


async def _sweep_holds(agg: Aggregator) -> None:
    """End the sessions of clusters another replica holds now; claim the unrecorded ones."""
    assert agg.kube is not None
    stale, unclaimed = await agg.kube.replicas.sweep(agg.tunnel.clusters)
    for name in stale:
        session = agg.tunnel.session(name)
        if session is not None:
            holder = agg.kube.replicas.holder(name)
            log.info("cluster %s is held by replica %s now: closing our session", name, holder)
            await session.close()
    for name in unclaimed:
        await agg.kube.replicas.claim(name)


async def _reload_loop(agg: Aggregator) -> None:
    while True:
        await asyncio.sleep(agg.settings.reload_interval)
        try:
            await agg.refresh()
        except (OSError, ValueError) as exc:
            log.error("clusters file unusable, keeping the current fleet: %s", exc)
        if agg.operators is not None:
            try:
                agg.operators.reload()
            except (OSError, ValueError) as exc:
                log.error("operator tokens unusable, keeping the current ones: %s", exc)
        if agg.kube is not None:
            agg.ready = agg.ready or agg.kube.loaded
            await _sweep_holds(agg)
        # A cluster taken out of the file loses its token, so its session must end too;
        # if it comes back, its agent reconnects and is registered (and assigned) afresh.
        for name in agg.tunnel.clusters:
            session = agg.tunnel.session(name)
            if name not in agg.views and session is not None:
                log.info("cluster %s is no longer defined: closing its tunnel", name)
                await session.close()
        # Also retries pushes that failed: a cluster without the current revision gets it.
        await agg.push_assignments()
