"""The health port: /healthz, /readyz and /metrics over real HTTP, the counts read from a real store."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from daemon.config import HealthConfig
from daemon.health import HealthServer, Metrics
from daemon.store import DeliveryState, State, Store
from tests.test_snapshot_store import record, upload

MARKER = "zz-echo-probe"


@pytest.fixture
def store(tmp_path: Path):
    opened = Store(tmp_path / "rosterd.db", {"north": ["cers", "vendor"], "west": ["cers"]})
    yield opened
    opened.close()


def fill(store: Store) -> None:
    """north: uploads in most states, and three accepted ones, so each target has three deliveries, which are
    moved to different states. south: one upload just received. west: a target, nothing else yet."""
    first, rejected, superseded, second, third, held = (upload(store, n) for n in (1, 2, 3, 4, 5, 6))
    record(store, first)
    store.add("u-dup", "north", "again.zip", "1" * 64, 100, "/state/uploads/u-dup")  # the bytes of `first`
    store.set_state(rejected, State.REJECTED)
    record(store, superseded, held=True)
    record(store, second)  # supersedes the held one before it
    record(store, third)
    record(store, held, held=True)
    upload(store, 7)  # still validating
    store.add("u-south", "south", "day1.zip", "s" * 64, 10, "/state/uploads/u-south")
    cers = {d.upload_id: d.id for d in store.deliveries("north") if d.target == "cers"}
    vendor = {d.upload_id: d.id for d in store.deliveries("north") if d.target == "vendor"}
    store.claim_delivery(cers[first])
    store.finish_delivery(cers[first], DeliveryState.DELIVERED)
    store.claim_delivery(cers[second])  # in flight; `third` pending behind it
    store.claim_delivery(vendor[first])
    store.finish_delivery(vendor[first], DeliveryState.DEAD, error="refused")
    store.claim_delivery(vendor[second])
    store.finish_delivery(vendor[second], DeliveryState.FAILED, error="503", next_attempt_at="2099-01-01T00:00:00Z")


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


def value(parsed: dict, name: str, **labels: str) -> float:
    return parsed[(name, frozenset(labels.items()))]


@asynccontextmanager
async def serving(metrics: Metrics, ready=lambda: True, alive=None) -> AsyncIterator[str]:
    server = HealthServer("127.0.0.1", 0, metrics, ready, alive)
    port = await server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.stop()


async def fetch(url: str, method: str = "GET") -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.request(method, url) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def test_metrics_count_uploads_and_deliveries_per_state_from_the_store(store: Store) -> None:
    fill(store)
    async with serving(Metrics(store, lambda: {"sftp_sessions": 3, "defender_bans": 1})) as base:
        status, content_type, text = await fetch(f"{base}/metrics")
    assert status == 200
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    got = samples(text)
    north = {state: value(got, "rosterd_uploads", tenant="north", state=state) for state in State}
    assert north == {State.RECEIVED: 0, State.VALIDATING: 1, State.REJECTED: 1, State.ACCEPTED: 3, State.HELD: 1,
                     State.SUPERSEDED: 1, State.DISCARDED: 0, State.DUPLICATE: 1, State.FAILED: 0}  # fmt: skip
    assert value(got, "rosterd_uploads", tenant="south", state="received") == 1
    assert value(got, "rosterd_uploads", tenant="west", state="accepted") == 0  # configured, nothing yet

    def deliveries(target: str) -> dict[str, float]:
        return {s: value(got, "rosterd_deliveries", tenant="north", target=target, state=s) for s in DeliveryState}

    assert deliveries("cers") == {"pending": 1, "in_flight": 1, "delivered": 1, "failed": 0, "dead": 0}
    assert deliveries("vendor") == {"pending": 1, "in_flight": 0, "delivered": 0, "failed": 1, "dead": 1}
    assert value(got, "rosterd_outbox_backlog", tenant="north", target="cers") == 2
    assert value(got, "rosterd_outbox_backlog", tenant="north", target="vendor") == 2
    assert value(got, "rosterd_outbox_backlog", tenant="west", target="cers") == 0
    assert value(got, "rosterd_sftp_sessions") == 3
    assert value(got, "rosterd_defender_bans") == 1


async def test_a_scrape_sees_the_store_as_it_is_then(store: Store) -> None:
    metrics = Metrics(store)
    first = upload(store, 1)
    before = samples(metrics.exposition().decode())
    record(store, first)
    after = samples(metrics.exposition().decode())
    assert value(before, "rosterd_uploads", tenant="north", state="validating") == 1
    assert value(after, "rosterd_uploads", tenant="north", state="validating") == 0
    assert value(after, "rosterd_outbox_backlog", tenant="north", target="vendor") == 1
    assert not any(name.startswith("rosterd_sftp") for name, _ in after)  # no live() given: no SFTP gauges


async def test_observed_histograms_and_counters_show_up(store: Store) -> None:
    metrics = Metrics(store)
    for seconds in (0.02, 0.3, 0.3, 400):
        metrics.validation_seconds.observe(seconds)
    metrics.diff_seconds.observe(1.5)
    metrics.delivery_seconds.labels(target_type="cers").observe(2.0)
    metrics.delivery_seconds.labels(target_type="webhook").observe(0.2)
    metrics.uploads_total.labels(tenant="north", outcome="accepted").inc(2)
    metrics.deliveries_total.labels(tenant="north", target="cers", outcome="failed").inc()
    async with serving(metrics) as base:
        _, _, text = await fetch(f"{base}/metrics")
    got = samples(text)
    assert value(got, "rosterd_validation_seconds_count") == 4
    assert value(got, "rosterd_validation_seconds_bucket", le="0.05") == 1
    assert value(got, "rosterd_validation_seconds_bucket", le="0.5") == 3
    assert value(got, "rosterd_validation_seconds_bucket", le="600.0") == 4
    assert value(got, "rosterd_validation_seconds_sum") == pytest.approx(400.62)
    assert value(got, "rosterd_diff_seconds_count") == 1
    assert value(got, "rosterd_delivery_seconds_count", target_type="cers") == 1
    assert value(got, "rosterd_delivery_seconds_sum", target_type="webhook") == pytest.approx(0.2)
    assert value(got, "rosterd_uploads_total", tenant="north", outcome="accepted") == 2
    assert value(got, "rosterd_deliveries_total", tenant="north", target="cers", outcome="failed") == 1


async def test_readyz_follows_ready_from_starting_to_ready_to_stopping(store: Store) -> None:
    ready = False
    async with serving(Metrics(store), ready=lambda: ready) as base:
        assert await fetch(f"{base}/readyz") == (503, "application/json", '{"status": "starting"}\n')
        ready = True
        assert await fetch(f"{base}/readyz") == (200, "application/json", '{"status": "ready"}\n')
        ready = False
        assert await fetch(f"{base}/readyz") == (503, "application/json", '{"status": "stopping"}\n')
        assert (await fetch(f"{base}/healthz"))[0] == 200  # not ready is not dead


async def test_healthz_answers_while_the_loop_does_and_alive_holds(store: Store) -> None:
    alive: object = True

    def check() -> bool:
        if isinstance(alive, Exception):
            raise alive
        return bool(alive)

    async with serving(Metrics(store), alive=check) as base:
        assert await fetch(f"{base}/healthz") == (200, "application/json", '{"status": "ok"}\n')
        alive = False
        assert (await fetch(f"{base}/healthz"))[:2] == (503, "application/json")
        alive = RuntimeError(MARKER)
        status, _, text = await fetch(f"{base}/healthz")
        assert status == 503 and MARKER not in text
    async with serving(Metrics(store)) as base:  # no alive(): the loop answering is enough
        assert (await fetch(f"{base}/healthz"))[0] == 200


async def test_only_get_and_head_on_the_three_paths_and_nothing_is_echoed(store: Store) -> None:
    async with serving(Metrics(store)) as base:
        for path in (f"/{MARKER}", f"/metrics/{MARKER}", "/", f"/healthz/../{MARKER}"):
            status, _, text = await fetch(base + path)
            assert status == 404 and MARKER not in text
        for method in ("POST", "PUT", "DELETE", "OPTIONS"):
            status, _, text = await fetch(f"{base}/metrics?{MARKER}=1", method)
            assert status == 405 and MARKER not in text
        async with aiohttp.ClientSession() as session, session.head(f"{base}/metrics") as response:
            assert response.status == 200 and await response.read() == b""
        status, _, text = await fetch(f"{base}/readyz?{MARKER}=1")
        assert status == 200 and MARKER not in text

        # A malformed request line: aiohttp's own answer would quote it back.
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"{MARKER}<b> /metrics HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.0 400") and MARKER.encode() not in answer


async def test_two_daemons_in_one_process_keep_their_own_metrics(tmp_path: Path) -> None:
    stores = [Store(tmp_path / f"{n}.db", {"north": ["cers"]}) for n in (1, 2)]
    try:
        one, two = Metrics(stores[0]), Metrics(stores[1])  # the same names registered twice: no clash
        upload(stores[0], 1)
        one.validation_seconds.observe(1)
        one.uploads_total.labels(tenant="north", outcome="rejected").inc()
        got_one, got_two = samples(one.exposition().decode()), samples(two.exposition().decode())
    finally:
        for opened in stores:
            opened.close()
    assert value(got_one, "rosterd_validation_seconds_count") == 1
    assert value(got_two, "rosterd_validation_seconds_count") == 0
    assert value(got_one, "rosterd_uploads", tenant="north", state="validating") == 1
    assert value(got_two, "rosterd_uploads", tenant="north", state="validating") == 0
    assert ("rosterd_uploads_total", frozenset({("tenant", "north"), ("outcome", "rejected")})) not in got_two
    assert prometheus_client.REGISTRY.get_sample_value("rosterd_validation_seconds_count") is None


class GatedStore:
    """A store whose counts() waits for a gate, and notes the thread it ran in."""

    def __init__(self, store: Store) -> None:
        self.store, self.targets = store, store.targets
        self.gate = threading.Event()
        self.threads: list[int] = []

    def __getattr__(self, name: str):  # everything else as the real store answers it
        return getattr(self.store, name)

    def counts(self):
        self.threads.append(threading.get_ident())
        assert self.gate.wait(30), "the test never opened the gate"
        return self.store.counts()


async def test_a_scrape_reads_the_store_off_the_loop_and_live_on_it(store: Store) -> None:
    gated = GatedStore(store)
    live_threads: list[int] = []
    metrics = Metrics(gated, lambda: live_threads.append(threading.get_ident()) or {"sftp_sessions": 0})
    async with serving(metrics) as base:
        scrape = asyncio.create_task(fetch(f"{base}/metrics"))
        for _ in range(1000):
            if gated.threads:
                break
            await asyncio.sleep(0.01)
        # The scrape is stuck inside the store; the loop still answers.
        assert (await fetch(f"{base}/healthz"))[0] == 200
        assert not scrape.done()
        gated.gate.set()
        status, _, text = await scrape
    assert status == 200 and "rosterd_sftp_sessions 0.0" in text
    assert gated.threads and threading.get_ident() not in gated.threads
    assert live_threads == [threading.get_ident()]


def test_health_config_defaults_and_bounds() -> None:
    assert HealthConfig() == HealthConfig(enabled=True, host="127.0.0.1", port=9222)
    assert HealthConfig(port=0).port == 0
    for bad in ({"port": 65536}, {"port": -1}, {"bind": "0.0.0.0"}):
        with pytest.raises(ValidationError):
            HealthConfig(**bad)
    with pytest.raises(ValidationError):
        HealthConfig().port = 1  # frozen
