"""What a licence target was sent, and what it is to be sent next.

A licence target sees a scoped view of the roster (targets/scope.py): only its orgs, roles, domains and
courses, with classes entering and leaving by date. What it gets is the change between the view it was last
sent and the view now, so a class entering scope is an addition and one leaving it a removal. The view sent
is kept per target (STATE/targets/<tenant>/<target>/<upload_id>/view/*.parquet) because a view depends on
the day it was made: recomputing last month's view today would move classes by date and hide their changes.

Preparing a delivery (scoping, diffing, writing what is to be sent) is polars work for a worker process. It
is written to a staging folder next to the kept views and reused by every attempt of the delivery, so a
retry sends exactly the same bytes under the same ids; only after the target took it is the staging folder
renamed into place as the new last-sent view, and older ones removed.

Replicas ([storage] kind = "s3") keep both in the shared storage as well, under the same names: a prepared
delivery as soon as it is prepared (so a replica that takes the delivery over sends what the first one did),
a kept view once the target took it (for whichever replica makes the next delivery).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl

from daemon.files import write_whole
from daemon.objects.mirror import NO_MIRROR, Mirror
from daemon.snapshots import storage
from daemon.snapshots.changes import SECRET_COLUMNS, ChangeSet
from daemon.snapshots.diff import diff_snapshots
from daemon.snapshots.storage import Folder
from daemon.outbox import Job
from daemon.targets.scope import scoped_view
from daemon.targets.settings import Scope, SftpTarget, WebhookTarget

VIEW = "view"
PREPARED = "prepared.json"  # written last: a staging folder with it is complete
STAGING_PREFIX = ".staging-"


def target_folder(state_dir: Path, tenant: str, target: str) -> Path:
    return state_dir / "targets" / tenant / target


def sent_view(folder: Path, upload_id: str | None) -> Path | None:
    """The kept view of what `upload_id`'s delivery sent, when it is kept."""
    if upload_id is None:
        return None
    path = folder / upload_id / VIEW
    return path if path.is_dir() else None


def staging(folder: Path, upload_id: str) -> Path:
    return folder / f"{STAGING_PREFIX}{upload_id}"


def prepared(folder: Path, upload_id: str) -> dict | None:
    """The summary of a complete staging folder for `upload_id`, or None."""
    marker = staging(folder, upload_id) / PREPARED
    return json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None


def scoped_change(
    snapshot: Folder, base_view: Path | None, base_snapshot: Folder | None, scope: Scope, today: date
) -> tuple[dict[str, pl.DataFrame], ChangeSet, dict[str, int]]:
    """The target's view of `snapshot` today, the change from what it has, and what the scope left out.

    What it has: the kept view it was sent, else (a view from before views were kept, or a replay) the
    scoped view of the snapshot it was sent, made today; None when it has nothing yet.
    """
    frames, _files = storage.scan_frames(snapshot)
    view, left_out = scoped_view(frames, scope, today)
    old: dict[str, pl.DataFrame] | None = None
    if base_view is not None:
        old = storage.read_frames(base_view)
    elif base_snapshot is not None:
        old, _ = scoped_view(storage.scan_frames(base_snapshot)[0], scope, today)
    view, old = _without_secrets(view), _without_secrets(old) if old is not None else None
    return view, diff_snapshots(old, view), left_out


def _without_secrets(view: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Passwords (users.password) never leave rosterd: a vendor's view has the column, always empty."""
    return {e: f.with_columns(pl.lit(None, dtype=f.schema[c]).alias(c) for c in SECRET_COLUMNS if c in f.columns)
            for e, f in view.items()}  # fmt: skip


def stage_change(staging: Path, snapshot: Folder, base_view: str | None, base_snapshot: Folder | None, scope: dict,
                 today: str) -> tuple[dict[str, pl.DataFrame], ChangeSet, dict[str, int]]:  # fmt: skip
    """In a worker process: scoped_change on plain arguments, with the new view written to a fresh `staging`
    folder (what an earlier, unfinished preparation left there is cleared first)."""
    view, changes, left_out = scoped_change(
        snapshot, Path(base_view) if base_view else None, base_snapshot,
        Scope.model_validate(scope), date.fromisoformat(today),
    )  # fmt: skip
    storage.clear(staging)
    staging.mkdir(parents=True)
    storage.write_frames(staging / VIEW, view)
    return view, changes, left_out


def mark_prepared(folder: Path, summary: dict) -> None:
    """The last step of preparing: from here on every attempt reuses what was written."""
    write_whole(folder / PREPARED, json.dumps(summary, sort_keys=True) + "\n", mode=None)


def publish(folder: Path, upload_id: str, mirror: Mirror = NO_MIRROR) -> None:
    """The target took `upload_id`'s delivery: its prepared view becomes the one kept; older ones go. With
    replicas the view is kept in the shared storage too (under the upload id, its prepared.json last), for
    whichever replica makes the target's next delivery, and the prepared delivery leaves it."""
    source = staging(folder, upload_id)
    if source.is_dir():  # else published by an earlier attempt that a crash cut short before it was recorded
        storage.publish(source, folder / upload_id)
    final = folder / upload_id
    if not final.is_dir():
        return
    for other in folder.iterdir():
        if other.name != upload_id and not other.name.startswith(STAGING_PREFIX):
            shutil.rmtree(other, ignore_errors=True)
    for path in sorted((final / VIEW).rglob("*.parquet")):
        mirror.push_file(path)
    mirror.push_file(final / PREPARED)
    mirror.drop_all_but(folder, {upload_id})


class LicenceTarget:
    """What the webhook and SFTP push targets share: window, daily deliveries, and a prepared delivery."""

    def __init__(
        self, tenant: str, settings: WebhookTarget | SftpTarget, state_dir: Path, mirror: Mirror = NO_MIRROR
    ) -> None:
        self.tenant = tenant
        self.name = settings.name
        self.settings = settings
        self.folder = target_folder(state_dir, tenant, settings.name)
        self.mirror = mirror  # replicas: prepared deliveries and kept views are in the shared storage too

    def next_open(self, now: datetime) -> datetime | None:
        return self.settings.window.next_open(now)

    def dated_zone(self) -> str | None:
        scope = self.settings.scope
        dated = scope.class_start_days is not None or scope.class_end_days is not None
        return self.settings.window.time_zone if dated else None

    async def close(self) -> None:
        pass

    async def prepare(self, job: Job, work: Callable[..., dict], *extra: object) -> tuple[dict, bool]:
        """The delivery's summary, prepared now by `work` in the pool, or by an earlier attempt against the
        same base (then True: reuse what it wrote). `work` takes the snapshot, the base's kept view, the base
        snapshot, the scope, today, the staging folder, then `extra`."""
        d = job.delivery
        summary = await asyncio.to_thread(self._prepared, d.upload_id)
        if summary is not None and summary["base_upload_id"] == d.base_upload_id:
            return summary, True
        base_view = await asyncio.to_thread(self._sent_view, d.base_upload_id)
        today = datetime.now(ZoneInfo(self.settings.window.time_zone)).date().isoformat()
        folder = staging(self.folder, d.upload_id)
        summary = await asyncio.get_running_loop().run_in_executor(
            job.pool, work, job.snapshot, str(base_view) if base_view else None, job.base,
            self.settings.scope.model_dump(mode="json"), today, str(folder), *extra,
        )  # fmt: skip
        # replicas: pushed whole before anything is sent, so that a replica taking the delivery over sends the
        # same bytes under the same ids
        await asyncio.to_thread(self.mirror.push_folder, folder, PREPARED)
        return summary, False

    def _prepared(self, upload_id: str) -> dict | None:
        """What an earlier attempt prepared: here, or (replicas) by another replica, fetched from the storage."""
        summary = prepared(self.folder, upload_id)
        if summary is None and self.mirror is not NO_MIRROR:
            folder = staging(self.folder, upload_id)
            storage.clear(folder)  # an attempt of this replica's that a crash cut short, if any
            if self.mirror.fetch_folder(folder, PREPARED) is not None:
                summary = prepared(self.folder, upload_id)
        return summary

    def _sent_view(self, upload_id: str | None) -> Path | None:
        """The kept view of what `upload_id`'s delivery sent: here, or (replicas) fetched from the storage."""
        view = sent_view(self.folder, upload_id)
        if view is None and upload_id is not None and self.mirror is not NO_MIRROR:
            self.mirror.fetch_folder(self.folder / upload_id, PREPARED)
            view = sent_view(self.folder, upload_id)
        return view
