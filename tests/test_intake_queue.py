"""The per-tenant queue: one upload at a time per tenant, and nothing left marked as queued when a reload
removes a tenant whose uploads were still waiting."""

from __future__ import annotations

import asyncio

from daemon.intake.queue import TenantQueues
from daemon.store import State, Upload


def upload(upload_id: str, tenant: str = "north") -> Upload:
    return Upload(upload_id, tenant, f"{upload_id}.zip", "a" * 64, 1, f"/state/{upload_id}", State.RECEIVED,
                  "2026-12-07T00:00:00.000Z", "2026-12-07T00:00:00.000Z")  # fmt: skip


class Handler:
    """Handles uploads in the order given, each held until released."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self, item: Upload) -> None:
        self.started.append(item.id)
        await self.release.wait()


async def until(condition, turns: int = 1000) -> None:
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def test_a_removed_tenants_waiting_uploads_are_no_longer_busy_and_run_when_it_comes_back() -> None:
    handle = Handler()
    queues = TenantQueues(handle, workers=2)
    queues.add(["north"])
    queues.serve(["north"])
    queues.enqueue(upload("u-1"))
    queues.enqueue(upload("u-2"))  # waits behind u-1: one at a time per tenant
    await until(lambda: handle.started == ["u-1"])

    queues.drop("north")  # a reload removed the tenant: u-1 finishes, u-2 leaves the queue
    assert queues.busy("u-1") and not queues.busy("u-2")
    handle.release.set()
    await asyncio.wait_for(queues.idle.wait(), 30)  # nothing counts as pending any more
    assert handle.started == ["u-1"]

    queues.enqueue(upload("u-3"))  # a tenant with no queue: left for the supervisor, not lost in a dead queue
    assert not queues.busy("u-3") and queues.idle.is_set()

    queues.add(["north"])  # the tenant is back (another reload), and the supervisor queues u-2 again
    queues.serve(["north"])
    queues.enqueue(upload("u-2"))
    await until(lambda: handle.started == ["u-1", "u-2"])
    await asyncio.wait_for(queues.idle.wait(), 30)
    await queues.stop()
