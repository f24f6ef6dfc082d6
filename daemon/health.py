"""Health and Prometheus metrics on their own loopback HTTP port, apart from the SFTP listener.

    GET /healthz   200 {"status": "ok"} while the event loop answers (and `alive()`, when given); else 503
    GET /readyz    200 {"status": "ready"} once the daemon serves (SFTP listening, start-up recovery done)
                   and intake can make progress; 503 {"status": "starting"} before that, {"status":
                   "stopping"} once it stops, and {"status": "not_ready", "reasons": {reason: detail}} while a
                   readiness check fails (no usable worker, the database takes no writes, the state disk is
                   under min_free_bytes, file descriptors over 90% of the limit: see readiness.py)
    GET /metrics   the Prometheus text format (version 0.0.4)

Anything else is 404, a method other than GET or HEAD on these paths 405. No answer repeats what the request
held, not even the text of a malformed request line, and no request is logged (a scrape every few seconds
would drown the journal).

Configured as `[health]` (`HealthConfig`, in daemon/config.py):

    [health]
    enabled = true        # false: no health port at all
    host = "127.0.0.1"    # loopback by default; bind elsewhere only behind a firewall (no authentication)
    port = 9222           # 0: any free port (tests)

The metrics, each scrape reading the store as it is then (counts come from SQLite, not from memory, so they
survive a restart and agree with `rosterd status`):

    rosterd_uploads{tenant,state}                    gauge: uploads in each state now
    rosterd_deliveries{tenant,target,state}          gauge: deliveries in each state now
    rosterd_outbox_backlog{tenant,target}            gauge: deliveries still to go (pending, in flight, failed)
    rosterd_oldest_unfinished_seconds                gauge: how long the oldest upload still received or
                                                     validating has been in that state (0: none)
    rosterd_sftp_sessions, rosterd_defender_bans     gauges from the SFTP listener, when it runs, with
    rosterd_sftp_open_files, rosterd_sftp_buffered_bytes  the handles sessions hold and upload bytes not on disk
    rosterd_ready, rosterd_not_ready{reason}         gauges: 1 ready / 1 for each readiness check failing now
    rosterd_worker_deaths_total                      counter: worker processes that died since the start
    rosterd_validation_seconds, rosterd_diff_seconds histograms the pipeline observes
    rosterd_delivery_seconds{target_type}            histogram: one delivery attempt
    rosterd_uploads_total{tenant,outcome}            counter: uploads decided since the start
    rosterd_deliveries_total{tenant,target,outcome}  counter: delivery attempts finished since the start

Every state of a known tenant or target is listed, zero included, so a series does not vanish when its count
drops to nothing.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from collections.abc import Callable, Iterator, Mapping
from http import HTTPStatus

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from daemon.http import PlainServer
from daemon.readiness import REASONS
from daemon.store import DeliveryState, State, Store, now

# prometheus_client's CONTENT_TYPE_LATEST names version 1.0.0 from 0.22 on; what generate_latest writes (with
# its default escaping) is the 0.0.4 format, and that is what a scraper must be told it gets.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# From a small package's validation (0.05 s) to the largest rosters' (minutes); attempts that hit a timeout
# land near the top.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

LIVE_HELP = {
    "sftp_sessions": "SFTP sessions open now, all tenants",
    "defender_bans": "Source addresses the defender bans now",
    "sftp_open_files": "Files, uploads and directory listings SFTP sessions hold open now",
    "sftp_buffered_bytes": "Upload bytes received and not yet written to disk, all sessions",
    "worker_deaths": "Worker processes that died (killed, out of memory, crashed) since the start",
}
LIVE_COUNTERS = frozenset({"worker_deaths"})  # live figures that only grow


API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The daemon's metrics in a registry of their own (several daemons may share a process in tests).

    `live()` reports what only the running daemon knows (SFTP sessions, bans); it reads state the event loop
    owns, so the HTTP handler calls it on the loop and hands the values to `exposition`, which reads the
    store and so runs in a thread.
    """

    def __init__(
        self,
        store: Store,
        live: Callable[[], dict[str, float]] | None = None,
        blockers: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.live = live
        self.blockers = blockers  # the readiness checks failing now (reason -> detail)
        self.registry = CollectorRegistry()
        self.registry.register(_StoreCollector(store))
        self.validation_seconds = Histogram(
            "rosterd_validation_seconds", "Time to validate one upload", buckets=DURATION_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.diff_seconds = Histogram(
            "rosterd_diff_seconds", "Time to merge and diff one upload against the current snapshot",
            buckets=DURATION_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.delivery_seconds = Histogram(
            "rosterd_delivery_seconds", "Time of one delivery attempt", ["target_type"], buckets=DURATION_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.uploads_total = Counter(
            "rosterd_uploads_total", "Uploads decided, by outcome (the state they were decided into)",
            ["tenant", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.deliveries_total = Counter(
            "rosterd_deliveries_total", "Delivery attempts finished, by outcome", ["tenant", "target", "outcome"],
            registry=self.registry,
        )  # fmt: skip

        self.api_requests_total = Counter(
            "rosterd_api_requests_total", "OneRoster API requests answered, by operation and HTTP status",
            ["operation", "status"], registry=self.registry,
        )  # fmt: skip
        self.api_request_seconds = Histogram(
            "rosterd_api_request_seconds", "Time to answer one OneRoster API request, by operation", ["operation"],
            buckets=API_BUCKETS, registry=self.registry,
        )  # fmt: skip

    def observe_api(self, operation: str, status: int, seconds: float) -> None:
        """One API request answered (operation: `v1p2 /classes/{id}/students`, `token`, or `unknown`)."""
        self.api_requests_total.labels(operation, str(status)).inc()
        self.api_request_seconds.labels(operation).observe(seconds)

    def read_live(self) -> dict[str, float]:
        return dict(self.live()) if self.live is not None else {}

    def read_blockers(self) -> dict[str, str]:
        return dict(self.blockers()) if self.blockers is not None else {}

    def exposition(self, live: Mapping[str, float] | None = None, blockers: Mapping[str, str] | None = None) -> bytes:
        """The text format. Blocks (it reads the store). Without `live` or `blockers`, reads them itself."""
        values = self.read_live() if live is None else live
        failing = self.read_blockers() if blockers is None else blockers
        return generate_latest(_Scrape(self.registry, values, failing))


class _StoreCollector:
    """Counts by state, read from the store at each scrape."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        counts = self.store.counts()
        uploads = GaugeMetricFamily("rosterd_uploads", "Uploads in each state now", labels=["tenant", "state"])
        for tenant in sorted(self.store.targets.keys() | {tenant for tenant, _ in counts["uploads"]}):
            for state in State:
                uploads.add_metric([tenant, state], counts["uploads"].get((tenant, state), 0))
        yield uploads

        deliveries = GaugeMetricFamily(
            "rosterd_deliveries", "Deliveries in each state now", labels=["tenant", "target", "state"]
        )
        backlog = GaugeMetricFamily(
            "rosterd_outbox_backlog", "Deliveries still to go: pending, in flight or failed (to be retried)",
            labels=["tenant", "target"],
        )  # fmt: skip
        configured = {(tenant, target) for tenant, targets in self.store.targets.items() for target in targets}
        for tenant, target in sorted(configured | {(tenant, target) for tenant, target, _ in counts["deliveries"]}):
            by_state = {state: counts["deliveries"].get((tenant, target, state), 0) for state in DeliveryState}
            for state, n in by_state.items():
                deliveries.add_metric([tenant, target, state], n)
            backlog.add_metric([tenant, target], sum(n for state, n in by_state.items() if state.open))
        yield deliveries
        yield backlog
        oldest = min((u.updated_at for u in self.store.unfinished()), default=None)
        waited = (_seconds_between(oldest, now()) if oldest else 0.0)
        yield GaugeMetricFamily("rosterd_oldest_unfinished_seconds",
                                "How long the oldest upload still received or validating has been in that state",
                                value=waited)  # fmt: skip


class _Scrape:
    """One scrape: the registry, then the live values read before it."""

    def __init__(self, registry: CollectorRegistry, live: Mapping[str, float], blockers: Mapping[str, str]) -> None:
        self.registry, self.live, self.blockers = registry, live, blockers

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
        for key, value in sorted(self.live.items()):
            family = CounterMetricFamily if key in LIVE_COUNTERS else GaugeMetricFamily
            yield family(f"rosterd_{key}", LIVE_HELP.get(key, key.replace("_", " ")), value=value)
        yield GaugeMetricFamily("rosterd_ready", "1 when every readiness check passes, else 0",
                                value=0 if self.blockers else 1)  # fmt: skip
        failing = GaugeMetricFamily("rosterd_not_ready", "1 for each readiness check failing now", labels=["reason"])
        for reason in sorted(set(REASONS) | self.blockers.keys()):
            failing.add_metric([reason], 1 if reason in self.blockers else 0)
        yield failing


def _seconds_between(earlier: str, later: str) -> float:
    return max(0.0, (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds())


class HealthServer:
    """The HTTP side: /healthz, /readyz and /metrics on `host:port`."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        ready: Callable[[], bool],
        alive: Callable[[], bool] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.metrics = metrics
        self.ready, self.alive = ready, alive
        self._routes = {"/healthz": self._healthz, "/readyz": self._readyz, "/metrics": self._metrics}
        self._was_ready = False
        self._runner: web.ServerRunner | None = None

    async def start(self) -> int:
        """Listen; returns the bound port (the free one picked when `port` is 0)."""
        self._runner = web.ServerRunner(PlainServer(self._handle), shutdown_timeout=5.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        return self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        route = self._routes.get(request.path)
        if route is None:
            return _json(HTTPStatus.NOT_FOUND, {"error": "not found"})
        if request.method not in ("GET", "HEAD"):
            return _json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "method not allowed"}, Allow="GET, HEAD")
        return await route()

    async def _healthz(self) -> web.Response:
        try:
            alive = self.alive is None or self.alive()
        except Exception:  # a failing check means not alive; it is not the prober's business why
            alive = False
        if alive:
            return _json(HTTPStatus.OK, {"status": "ok"})
        return _json(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "failing"})

    async def _readyz(self) -> web.Response:
        if not self.ready():
            status = "stopping" if self._was_ready else "starting"
            return _json(HTTPStatus.SERVICE_UNAVAILABLE, {"status": status})
        self._was_ready = True
        blockers = self.metrics.read_blockers()
        if blockers:
            return _json(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "not_ready", "reasons": blockers})
        return _json(HTTPStatus.OK, {"status": "ready"})

    async def _metrics(self) -> web.Response:
        live, blockers = self.metrics.read_live(), self.metrics.read_blockers()  # on the loop that owns them
        body = await asyncio.to_thread(self.metrics.exposition, live, blockers)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})


def _json(status: HTTPStatus, body: dict, **headers: str) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(body).encode() + b"\n",
        headers={"Content-Type": "application/json", "Cache-Control": "no-store", **headers},
    )  # fmt: skip
