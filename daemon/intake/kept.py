"""Where intake keeps a taken upload's bytes: uploads/ while it is processed, quarantine/ once it is set aside.

    STATE/uploads/<tenant>/<upload_id>.zip     taken from the inbox, until its upload reaches a final state
    STATE/uploads/<tenant>/<upload_id>.name    its original name, until the upload is recorded
    STATE/quarantine/<tenant>/<upload_id>.zip  a rejected or failed upload, kept for the quarantine period

The kept file is named `<upload_id>.zip`, whatever the uploader called it: a name may be as long as the
filesystem allows, and the id in front of it would make it too long. The original name lives in the store,
and until the upload is recorded, in a label beside the file, written (and fsynced) before the move and
removed once the record holds the name. Files kept by earlier versions, `<upload_id>--<name>`, are still
recognised.

Owns these two folders and every name in them. Given the state directory. Intake (arrivals, the supervisor)
and daemon/snapshots/process.py are handed a `KeptFiles`: the processing sets a rejected or failed upload
aside through it (the move into quarantine is intake's, as is the expiry of what is there) and drops a
duplicate's bytes, without knowing where either folder is. Every method blocks: callers use a thread.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from daemon.objects.mirror import NO_MIRROR, Mirror
from daemon.store import Upload

KEPT_SUFFIX = ".zip"  # <upload_id>.zip in the uploads and quarantine folders
LABEL_SUFFIX = ".name"  # <upload_id>.name: the original name, until the upload is recorded
NAME_SEPARATOR = "--"  # <upload_id>--<original name>: how versions before labels kept a file
HIDDEN_PREFIX = "."  # .<upload_id>.name.XXXXXX.tmp: a label being written


class KeptFiles:
    def __init__(self, state_dir: Path, mirror: Mirror = NO_MIRROR) -> None:
        self.uploads_dir = state_dir / "uploads"
        self.quarantine_dir = state_dir / "quarantine"
        self.mirror = mirror  # the shared copy of each kept file (replicas), dropped with it

    def folder(self, tenant: str) -> Path:
        """A tenant's uploads being processed."""
        return self.uploads_dir / tenant

    def kept(self, tenant: str, upload_id: str) -> Path:
        """Where a file taken from the inbox is kept while its upload is processed."""
        return self.folder(tenant) / f"{upload_id}{KEPT_SUFFIX}"

    def quarantined(self, upload: Upload) -> Path:
        """Where a rejected or failed upload's file is set aside (recorded in the store before the move)."""
        return self.quarantine_dir / upload.tenant / Path(upload.path).name

    def set_aside(self, source: Path, target: Path) -> None:
        """Move a kept file to its place in quarantine (same filesystem: atomic)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        self.mirror.drop_file(source)  # quarantine is this replica's own: no other replica processes it again

    def drop(self, upload: Upload) -> None:
        """A duplicate's bytes: nothing is done with them."""
        self.mirror.here(Path(upload.path)).unlink(missing_ok=True)
        self.mirror.drop_file(Path(upload.path))

    def expire(self, max_age_seconds: float) -> None:
        """Delete quarantined files older than the quarantine period."""
        limit = time.time() - max_age_seconds
        for kept in self.quarantine_dir.glob("*/*"):
            try:
                if kept.lstat().st_mtime < limit:
                    kept.unlink()
            except FileNotFoundError:
                continue


def kept_id(name: str) -> tuple[str | None, bool]:
    """The upload id a name in the uploads folder belongs to, and whether it is a label (or a label's
    temporary file); None for anything else."""
    if name.startswith(HIDDEN_PREFIX):  # .<id>.name.XXXXXX.tmp: a label being written
        stem, found, _rest = name[1:].partition(LABEL_SUFFIX + ".")
        return (stem, True) if found and name.endswith(".tmp") else (None, False)
    if NAME_SEPARATOR in name:
        return name.partition(NAME_SEPARATOR)[0], False
    for suffix, is_label in ((KEPT_SUFFIX, False), (LABEL_SUFFIX, True)):
        if name.endswith(suffix):
            return name.removesuffix(suffix), is_label
    return None, False
