"""The one writer of results/: receipts, latest.json and the CERS target's dry-run files.

Owns every write under a tenant's results/ folder: a receipt's text and JSON (the text first, so whoever
sees the JSON in a new state finds the text in that state too), latest.json, the pruning of old receipts,
one writer at a time per tenant (each write prunes), marking a final upload answered once its receipt is
written, and the files of a dry run in results/cers/.

Given the store, each tenant's results/ folder and how many receipts to keep. `Receipts` is built once by
daemon/app.py and called by whoever changes an upload's state: intake (received, and what a crash left
unanswered) and daemon/snapshots/process.py (each final state) through their `answer` callable, the outbox
through app.py's on_change (a delivery moved on), the CERS target through the `write_files` callable it is
given (a dry run). The blocking `write` is for the command line (`rosterd approve`), which has no event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from daemon.files import write_whole
from daemon.objects.mirror import NO_MIRROR, Mirror
from daemon.receipts.layout import DRY_RUN_FOLDER, LATEST, TMP_PREFIX, receipt_stem
from daemon.receipts.receipt import from_store
from daemon.receipts.text import render_text
from daemon.store import Store, Upload

DRY_RUN_FILES_KEPT = 300


class Receipts:
    """What the running daemon writes into results/, each write built from the store."""

    def __init__(self, store: Store, results: Mapping[str, Path], keep: int = 100, mirror: Mirror = NO_MIRROR) -> None:
        self.store = store
        self.mirror = mirror  # every file written here is shared with the other replicas through it
        self.results = dict(results)  # tenant -> its results/ folder
        self.keep = keep  # receipts kept per tenant
        self._writing: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)  # tenant -> its results/

    async def prepare(self) -> None:
        """Each tenant's results/ folder, there before its first receipt."""
        for folder in self.results.values():
            await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)

    async def update_tenants(self, results: Mapping[str, Path]) -> None:
        """A reload: the tenants' results/ folders as configured now."""
        self.results = dict(results)
        await self.prepare()

    async def answer(self, upload: Upload, latest: bool | None = True) -> None:
        """Write the receipt for the upload's recorded state, built from the store like every version of it (so
        no version lacks a section another has); a final state is then marked answered. latest.json too when
        `latest` is True, or when it is None and the upload is the tenant's newest."""
        if latest is None:
            latest = await self.is_newest(upload)
        receipt = await _db(from_store, self.store, upload)
        async with self._writing[upload.tenant]:  # one writer at a time: each write prunes the folder
            await asyncio.to_thread(write, self.results[upload.tenant], receipt, self.keep, latest, self.mirror)
        if upload.state.final:
            await _db(self.store.mark_answered, upload.id)

    async def refresh(self, upload_id: str) -> None:
        """Write an upload's receipt again from the store (a delivery of it moved on); latest.json too when it
        is the tenant's newest upload. A tenant no longer configured keeps its receipts as they are."""
        upload = await _db(self.store.get, upload_id)
        if upload.tenant not in self.results:
            return
        await self.answer(upload, latest=None)

    async def is_newest(self, upload: Upload) -> bool:
        newest = await _db(self.store.recent, upload.tenant, 1)
        return bool(newest) and newest[0].id == upload.id

    async def write_files(self, tenant: str, files: dict[str, bytes]) -> None:
        """A dry run's files, as they would have been sent, into the tenant's results/cers/."""
        await asyncio.to_thread(write_dry_run_files, self.results[tenant], files, self.mirror)


async def _db(method, *args, **kwargs):
    """A store call in a worker thread: SQLite commits fsync, which must not stall the event loop."""
    return await asyncio.to_thread(method, *args, **kwargs)


def write(results: Path, receipt: dict, keep: int = 100, latest: bool = True, mirror: Mirror = NO_MIRROR) -> Path:
    """Write the text and JSON receipts and (unless `latest` is False) latest.json; drop receipts beyond the
    newest `keep`. The text goes first: whoever sees the JSON (what clients poll) in a new state finds the text
    in that state too; each file is shared through `mirror` as soon as it is written. Blocking."""
    results.mkdir(parents=True, exist_ok=True)
    stem = receipt_stem(receipt["file"], receipt["upload_id"])
    body = json.dumps(receipt, indent=2, ensure_ascii=False) + "\n"
    path = results / f"{stem}.json"
    _publish(results / f"{stem}.txt", render_text(receipt), mirror)
    _publish(path, body, mirror)
    if latest:
        _publish(results / LATEST, body, mirror)
    _prune(results, keep, mirror)
    return path


def write_dry_run_files(results: Path, files: dict[str, bytes], mirror: Mirror = NO_MIRROR) -> None:
    """The files of a dry run, as they would have been sent, each written whole under a hidden name and
    renamed into results/cers/; only the newest DRY_RUN_FILES_KEPT are kept. Blocking."""
    folder = results / DRY_RUN_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        _publish(folder / name, data, mirror)
    kept = sorted((p for p in folder.glob("*.csv")), key=lambda p: p.stat().st_mtime_ns)
    for old in kept[: max(0, len(kept) - DRY_RUN_FILES_KEPT)]:
        old.unlink(missing_ok=True)
        mirror.drop_file(old)


def _publish(path: Path, data: str | bytes, mirror: Mirror) -> None:
    """Whole or not at all, under a TMP_PREFIX name until then (which the SFTP listing never shows); then
    shared."""
    write_whole(path, data, mode=None, temp_prefix=TMP_PREFIX)
    mirror.push_file(path)


def _prune(results: Path, keep: int, mirror: Mirror) -> None:
    """Drop all but the newest `keep` receipts. Another writer (the CLI's `approve`, say) may prune at the same
    time: a receipt gone between the listing and its stat was pruned by it, and is passed over."""
    dated = []
    for path in results.glob("*.json"):
        if path.name == LATEST or path.name.startswith(TMP_PREFIX):
            continue
        try:
            dated.append((path.stat().st_mtime_ns, path))
        except FileNotFoundError:
            continue
    dated.sort()
    for _mtime, old in dated[: max(0, len(dated) - keep)]:
        for gone in (old, old.with_suffix(".txt")):
            gone.unlink(missing_ok=True)
            mirror.drop_file(gone)
