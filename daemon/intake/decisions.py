"""Operators' decisions, logged by the daemon: each once, with its operator and time.

`rosterd approve`, `discard`, `rebaseline`, `replay` and `enable-target` record their decision in the store
and log it to the operator's terminal; this puts each in the daemon's own log (the journal) too, once, and
tells `on_accepted` of an approval (a new current snapshot: its deliveries may go). Given the store, the log
and `on_accepted`; reads the store every `decisions_seconds`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from daemon.store import Action, Store

DECISION_EVENTS = {  # how the daemon logs an operator's decision once it sees it in the store
    Action.APPROVED: "upload.approved",
    Action.DISCARDED: "upload.discarded",
    Action.REBASELINE: "tenant.rebaseline_requested",
    Action.REPLAYED: "delivery.replayed",
    Action.TARGET_ENABLED: "target.enabled",
    Action.TARGET_PAUSED: "target.paused",
}


class DecisionLog:
    def __init__(self, store: Store, log: Callable[..., None],
                 on_accepted: Callable[[str, str], None] | None = None) -> None:  # fmt: skip
        self.store = store
        self.log = log  # log(event, **fields)
        self.on_accepted = on_accepted  # (tenant, upload_id): an approval made it the current snapshot

    async def watch_forever(self, seconds: float) -> None:
        while True:
            try:
                await self.log_decisions()
            except Exception as exc:  # the next round tries again; nothing is marked logged that was not
                self.log("upload.failed", error=repr(exc), stage="decisions")
            await asyncio.sleep(seconds)

    async def log_decisions(self) -> None:
        """Log the decisions that the daemon has not logged yet, each once, and mark them logged."""
        decisions = await asyncio.to_thread(self.store.unlogged_decisions)
        for d in decisions:
            about = {k: v for k, v in (("delivery_id", d.delivery_id), ("target", d.target)) if v}
            self.log(DECISION_EVENTS[d.action], tenant=d.tenant, upload_id=d.upload_id, operator=d.operator,
                     at=d.at, **about)  # fmt: skip
            if d.action is Action.APPROVED and self.on_accepted is not None:
                self.on_accepted(d.tenant, d.upload_id)  # a new current snapshot: its deliveries may go
        if decisions:
            await asyncio.to_thread(self.store.mark_logged, [d.id for d in decisions])
