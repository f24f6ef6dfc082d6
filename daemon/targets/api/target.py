"""An api target in the outbox: its "delivery" of an accepted snapshot is making the publication the API
serves (daemon/targets/api/publish.py), so publications follow the outbox's rules: one per accepted upload, in
upload order per target, none for a held upload until it is approved, and a crash in the middle is made good by
the next start. The publication is made in a worker process into a staging folder and renamed into place; the
folder of the one it replaced is removed, as licence targets' kept views are (daemon/targets/views.py).

A scope that moves classes by date (class_start_days, class_end_days) gets a publication every day, in UTC,
as licence targets get a daily delivery in their window's zone.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from pathlib import Path

from daemon.outbox import Job, Outcome, delivered
from daemon.snapshots import storage
from daemon.targets.api.publish import is_complete, make_visible, publish_target, visible_at
from daemon.targets.settings import ApiTarget
from daemon.targets.views import STAGING_PREFIX, staging, target_folder

LEAD_SECONDS = 1.0  # how far ahead of its switch a publication is dated; far more than a rename takes


def current_publication(state_dir: Path, tenant: str, target: str) -> Path | None:
    """The publication an api target serves now: its newest complete folder whose moment has come (None
    before the first)."""
    folder = target_folder(state_dir, tenant, target)
    now = datetime.now(UTC)
    try:
        found = list(_complete(folder))
    except FileNotFoundError:
        return None
    return max(((at, p) for at, p in found if at <= now), default=(None, None))[1]


def _complete(folder: Path):
    """(moment, folder) of each complete publication; one that a switch clears meanwhile is passed over (it
    was being replaced by a newer one, which is among them)."""
    for p in folder.iterdir():
        if p.name.startswith(STAGING_PREFIX):
            continue
        try:
            if is_complete(p):
                yield visible_at(p), p
        except FileNotFoundError:
            continue


def _switch(folder: Path, upload_id: str) -> datetime | None:
    """The staged publication is dated LEAD_SECONDS ahead (to the millisecond) and goes into place under a
    name of its own (a daily one of the same upload gets a new folder); it is served from its moment on, so
    a record's new date is never earlier than the first answer that shows it (see publish.py on
    dateLastModified). Once the moment has come, the publications it replaced go (a request still reading one
    had its files open, or reads again from the new one: see server.py). Returns the moment, or None when an
    earlier attempt switched it already."""
    source = staging(folder, upload_id)
    if not source.is_dir():
        return None  # switched by an earlier attempt that a crash cut short before it was recorded
    moment = datetime.fromtimestamp(math.ceil((time.time() + LEAD_SECONDS) * 1000) / 1000, UTC)
    make_visible(source, moment)
    final = folder / f"{upload_id}@{moment.strftime('%Y%m%dT%H%M%S.%fZ')}"
    storage.publish(source, final)
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))  # the old one serves until then
    for other in folder.iterdir():
        if other != final and not other.name.startswith(STAGING_PREFIX):
            storage.clear(other)
    return moment


class ApiPublication:
    """The outbox's Target for an api target."""

    def __init__(self, tenant: str, settings: ApiTarget, state_dir: Path, base_url: str) -> None:
        self.tenant = tenant
        self.base_url = base_url  # what hrefs start with: the [api] section's origin
        self.name = settings.name
        self.settings = settings
        self.state_dir = state_dir
        self.folder = target_folder(state_dir, tenant, settings.name)

    def next_open(self, now: datetime) -> datetime | None:
        return None  # no window: a publication is made as soon as its snapshot is accepted

    def dated_zone(self) -> str | None:
        scope = self.settings.scope
        return "UTC" if scope.class_start_days is not None or scope.class_end_days is not None else None

    async def close(self) -> None:
        pass

    async def deliver(self, job: Job) -> Outcome:
        d = job.delivery
        previous = await asyncio.to_thread(current_publication, self.state_dir, self.tenant, self.name)
        now = datetime.now(UTC)
        summary = await asyncio.get_running_loop().run_in_executor(
            job.pool, publish_target, job.snapshot, str(previous) if previous else None,
            self.settings.scope.model_dump(mode="json"), list(self.settings.versions),
            self.settings.tobedeleted_days, now.date().isoformat(), now.isoformat(),
            str(staging(self.folder, d.upload_id)), self.base_url,
        )  # fmt: skip
        moment = await asyncio.to_thread(_switch, self.folder, d.upload_id)
        records = {v: sum(c["records"] for c in counts.values()) for v, counts in summary["versions"].items()}
        changed = {v: sum(c["changed"] for c in counts.values()) for v, counts in summary["versions"].items()}
        published = moment.isoformat(timespec="milliseconds") if moment else None
        return delivered({"published_at": published, "records": records, "changed": changed})
