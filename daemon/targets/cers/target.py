"""The CERS target: one delivery = the groups that changed between two snapshots, POSTed as group files.

The files are built in a worker process (polars): the groups of the snapshot the delivery brings CERS to,
compared group by group with those of the snapshot CERS has (delete-and-replace per group: a changed group
is sent whole, a vanished one with its key fields only, which empties it). The same groups always give the
same bytes, so a repeated attempt is recognised by CERS (PROCESSED) and changes nothing.

In dry-run mode the files are handed to `write_files` for review instead of being sent: in the daemon that is
daemon/receipts' writer (daemon/app.py passes it; targets come before receipts in the flow, so they are given
it and never import it), which puts them in the tenant's results/cers/. A delivery in which no group changed
has no files and writes nothing there (its receipt says so).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

import aiohttp

from daemon.snapshots import storage
from daemon.outbox import Job, Outcome, delivered, permanent, retry
from daemon.targets.cers.client import CersClient, Verdict
from daemon.targets.cers.cognito import CognitoAuth
from daemon.targets.cers.settings import CersTarget

DRY_RUN_FILES_KEPT = 300

WriteFiles = Callable[[str, dict[str, bytes]], Awaitable[None]]  # (tenant, file name -> bytes): a dry run's files


def build_files(snapshot: storage.Folder, base: storage.Folder | None, settings: dict) -> dict:
    """In a worker process: the group files of one delivery, with counts and mapping findings."""
    from daemon.targets.cers.groups import build_groups, changed_groups, group_files

    target = CersTarget.model_validate(settings)
    frames, _files = storage.scan_frames(snapshot)
    groups, findings = build_groups(frames, target.mapping, target.filters)
    old = None
    if base is not None:
        base_frames, _ = storage.scan_frames(base)
        old, _old_findings = build_groups(base_frames, target.mapping, target.filters)
    changed, counts = changed_groups(old, groups)
    files = group_files(changed, target.max_rows_per_file) if changed.height else []
    return {"files": files, "counts": counts, "findings": findings}


def file_name(tenant: str, upload_id: str, number: int) -> str:
    return f"rosterd-{tenant}-{upload_id}-{number}.csv"


class CersGroupsTarget:
    def __init__(self, tenant: str, settings: CersTarget, write_files: WriteFiles | None = None) -> None:
        self.tenant = tenant
        self.name = settings.name
        self.settings = settings
        self.write_files = write_files  # where a dry run's files go: daemon/receipts' writer, given by app.py
        self._session: aiohttp.ClientSession | None = None
        self._auth: CognitoAuth | None = None

    def client(self) -> CersClient:
        """The HTTP client, made on first use (inside the running loop); one token cache per target."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._auth = CognitoAuth(self.settings.cognito, self._session)
        assert self._auth is not None
        return CersClient(self.settings, self._session, self._auth)

    def next_open(self, now: datetime) -> None:
        return None  # CERS takes files at any hour

    def dated_zone(self) -> None:
        return None  # groups do not move by date

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def deliver(self, job: Job) -> Outcome:
        loop = asyncio.get_running_loop()
        built = await loop.run_in_executor(job.pool, build_files, job.snapshot, job.base,
                                           self.settings.model_dump(mode="json"))  # fmt: skip
        upload_id = job.delivery.upload_id
        names = [file_name(self.tenant, upload_id, n) for n in range(1, len(built["files"]) + 1)]
        result = {"counts": built["counts"], "findings": built["findings"], "dry_run": self.settings.dry_run,
                  "against_upload_id": job.delivery.base_upload_id,
                  "files": [{"name": name, "rows": data.count(b"\n") - 1} for name, data in zip(names, built["files"])]}  # fmt: skip
        if self.settings.dry_run:
            files = dict(zip(names, built["files"]))
            if self.write_files is None:  # only check-targets builds a target without one, and never delivers
                raise RuntimeError("a CERS dry run needs the receipts writer (write_files) to put its files in results/")
            await self.write_files(self.tenant, files)
            return delivered(result)
        client = self.client()
        for entry, data in zip(result["files"], built["files"]):
            sent = await client.upload(entry["name"], data)
            if sent.record is not None:
                entry.update({k: sent.record.get(k) for k in ("id", "status", "digest", "message")})
            if sent.verdict is Verdict.RETRY:
                return retry(sent.error or "retry", result, sent.retry_after)
            if sent.verdict is Verdict.REFUSED:
                return permanent(sent.error or "refused", result)
        result["credential"] = self._auth.username if self._auth else None
        return delivered(result)
