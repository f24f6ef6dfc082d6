"""An api target in the outbox: its "delivery" of an accepted snapshot is making the publication the API
serves (daemon/targets/api/publish.py), so publications follow the outbox's rules: one per accepted upload, in
upload order per target, none for a held upload until it is approved, and a crash in the middle is made good by
the next start. The publication is made in a worker process into a staging folder and renamed into place; the
folder of the one it replaced is removed, as licence targets' kept views are (daemon/targets/views.py).

A scope that moves classes by date (class_start_days, class_end_days) gets a publication every day, in UTC,
as licence targets get a daily delivery in their window's zone.

Replicas ([storage] kind = "s3") serve the same publication at the same moment. The one that makes it puts it
in the shared storage under its final name, its visible.json last, and dates it REPLICA_LEAD_SECONDS ahead:
longer than any replica's list of a target's publications may be old (LOOK_SECONDS), so every replica knows of
it before its moment and switches to it then, as one daemon alone does. A replica fetches a publication whole
into its own state directory the first time it serves it: API pages read the same files over and over, and a
range read from the storage for each would cost every page a round trip or more.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from daemon.objects.mirror import NO_MIRROR, Mirror
from daemon.outbox import Job, Outcome, delivered
from daemon.snapshots import storage
from daemon.targets.api.publish import META, VISIBLE, is_complete, make_visible, publish_target, visible_at
from daemon.targets.settings import ApiTarget
from daemon.targets.views import STAGING_PREFIX, staging, target_folder

LEAD_SECONDS = 1.0  # how far ahead of its switch a publication is dated; far more than a rename takes
REPLICA_LEAD_SECONDS = 5.0  # the same with replicas: time for each of them to have seen it (LOOK_SECONDS)
LOOK_SECONDS = 1.0  # replicas: how long a replica goes on with its list of a target's publications


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


def _switch(folder: Path, upload_id: str, publications: Publications) -> datetime | None:
    """The staged publication is dated ahead (to the millisecond) and goes into place under a name of its own
    (a daily one of the same upload gets a new folder); it is served from its moment on, so a record's new date
    is never earlier than the first answer that shows it (see publish.py on dateLastModified). With replicas it
    is put in the shared storage first, under that name, its visible.json last. Once the moment has come, the
    publications it replaced go (a request still reading one had its files open, or reads again from the new
    one: see server.py). Returns the moment, or None when an earlier attempt switched it already."""
    source = staging(folder, upload_id)
    if not source.is_dir():
        return None  # switched by an earlier attempt that a crash cut short before it was recorded
    final = folder / f"{upload_id}@{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}"
    mirror = publications.mirror
    mirror.push_folder(source, META, as_folder=final)  # a crash from here on: the next attempt pushes anew
    moment = datetime.fromtimestamp(math.ceil((time.time() + publications.lead) * 1000) / 1000, UTC)
    make_visible(source, moment)
    mirror.push_file(source / VISIBLE, as_path=final / VISIBLE)
    publications.forget(folder)
    storage.publish(source, final)
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))  # the old one serves until then
    for other in folder.iterdir():
        if other != final and not other.name.startswith(STAGING_PREFIX):
            storage.clear(other)
    mirror.drop_all_but(folder, {final.name})
    return moment


class Publications:
    """Which publication of each api target is served now, and where it is read from.

    One daemon alone: the newest complete folder here whose moment has come (current_publication). Replicas:
    the newest whole one in the shared storage whose moment has come, fetched here whole the first time. Each
    one's moment (its visible.json, written once) is read once. Blocking: called from threads."""

    def __init__(self, state_dir: Path, mirror: Mirror = NO_MIRROR, lead: float | None = None) -> None:
        self.state_dir = state_dir
        self.mirror = mirror
        self.shared = mirror is not NO_MIRROR
        self.lead = lead or (REPLICA_LEAD_SECONDS if self.shared else LEAD_SECONDS)  # more than LOOK_SECONDS
        self._lock = threading.Lock()
        self._looked: dict[Path, tuple[float, list[tuple[datetime, str]]]] = {}  # folder -> (when, publications)
        self._moments: dict[str, datetime] = {}  # a visible.json's key -> the moment it holds

    def current(self, tenant: str, target: str) -> Path | None:
        folder = target_folder(self.state_dir, tenant, target)
        if not self.shared:
            return current_publication(self.state_dir, tenant, target)
        for fresh in (False, True):
            now = datetime.now(UTC)
            found = max(((at, name) for at, name in self._list(folder, fresh) if at <= now), default=None)
            if found is None:
                return None
            here = self.mirror.fetch_folder(folder / found[1], VISIBLE)
            if here is not None:
                for other in folder.iterdir():  # older ones no longer served here: a newer one's moment came
                    if other.name < here.name and not other.name.startswith("."):  # staging, fetching
                        storage.clear(other)
                return here
        raise FileNotFoundError(f"the publication {found[1]} of {tenant}/{target} left the shared storage")

    def forget(self, folder: Path) -> None:
        """Look at the storage again at the next request (this replica has just put a publication there)."""
        with self._lock:
            self._looked.pop(folder, None)

    def _list(self, folder: Path, fresh: bool) -> list[tuple[datetime, str]]:
        """(moment, name) of the target's whole publications in the storage (visible.json and published.json
        there), as listed at most LOOK_SECONDS ago unless `fresh`."""
        with self._lock:
            looked = self._looked.get(folder)
        if not fresh and looked is not None and time.monotonic() - looked[0] < LOOK_SECONDS:
            return looked[1]
        prefix = self.mirror.key(folder) + "/"
        files: dict[str, set[str]] = {}
        for info in self.mirror.storage.list(prefix):
            name, _, rest = info.key[len(prefix):].partition("/")
            if not name.startswith(STAGING_PREFIX):
                files.setdefault(name, set()).add(rest)
        found = [(self._moment(f"{prefix}{name}/{VISIBLE}"), name) for name, held in sorted(files.items())
                 if META in held and VISIBLE in held]  # fmt: skip
        listed = {f"{prefix}{name}/{VISIBLE}" for _at, name in found}
        with self._lock:
            self._looked[folder] = (time.monotonic(), found)
            for gone in [key for key in self._moments if key.startswith(prefix) and key not in listed]:
                del self._moments[gone]
        return found

    def _moment(self, key: str) -> datetime:
        with self._lock:
            known = self._moments.get(key)
        if known is None:
            known = datetime.fromisoformat(json.loads(self.mirror.storage.get_bytes(key))["at"])
            with self._lock:
                self._moments[key] = known
        return known


class ApiPublication:
    """The outbox's Target for an api target."""

    def __init__(
        self, tenant: str, settings: ApiTarget, state_dir: Path, base_url: str, publications: Publications | None = None
    ) -> None:
        self.tenant = tenant
        self.base_url = base_url  # what hrefs start with: the [api] section's origin
        self.name = settings.name
        self.settings = settings
        self.state_dir = state_dir
        self.folder = target_folder(state_dir, tenant, settings.name)
        self.publications = publications or Publications(state_dir)

    def next_open(self, now: datetime) -> datetime | None:
        return None  # no window: a publication is made as soon as its snapshot is accepted

    def dated_zone(self) -> str | None:
        scope = self.settings.scope
        return "UTC" if scope.class_start_days is not None or scope.class_end_days is not None else None

    async def close(self) -> None:
        pass

    async def deliver(self, job: Job) -> Outcome:
        d = job.delivery
        previous = await asyncio.to_thread(self.publications.current, self.tenant, self.name)
        now = datetime.now(UTC)
        summary = await asyncio.get_running_loop().run_in_executor(
            job.pool, publish_target, job.snapshot, str(previous) if previous else None,
            self.settings.scope.model_dump(mode="json"), list(self.settings.versions),
            self.settings.tobedeleted_days, now.date().isoformat(), now.isoformat(),
            str(staging(self.folder, d.upload_id)), self.base_url,
        )  # fmt: skip
        moment = await asyncio.to_thread(_switch, self.folder, d.upload_id, self.publications)
        records = {v: sum(c["records"] for c in counts.values()) for v, counts in summary["versions"].items()}
        changed = {v: sum(c["changed"] for c in counts.values()) for v, counts in summary["versions"].items()}
        published = moment.isoformat(timespec="milliseconds") if moment else None
        return delivered({"published_at": published, "records": records, "changed": changed})
