"""The SFTP push target: the vendor's scoped roster as a OneRoster CSV zip on the vendor's own SFTP server.

Each delivery is one zip in the OneRoster version the vendor takes: the whole scoped roster (`mode =
"bulk"`), or only what changed in it since the last delivery (`mode = "delta"`: upserts as active rows,
removals as tobedeleted; the first delivery is a bulk one, as there is nothing to apply a delta to). The zip
passes rosterd's own strict validation before it leaves.

The upload: an asyncssh client with the same strong algorithms as rosterd's server, the vendor's host key
pinned (any other key is refused, there is no trust on first use), a private key or a password; the zip is
written under `<name>.filepart` and renamed to its name once complete (replacing a file of that name left by
an earlier attempt), so the vendor never picks up half a zip.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import asyncssh

from daemon.files import write_whole
from daemon.outbox import Job, Outcome, delivered, permanent, retry
from daemon.snapshots.storage import Folder
from daemon.ssh_algorithms import client_options
from daemon.targets import views
from daemon.targets.secrets import SecretMissing
from daemon.targets.settings import SftpTarget

PACKAGE = "package.zip"
PARTIAL_SUFFIX = ".filepart"


def prepare(snapshot: Folder, base_view: str | None, base_snapshot: Folder | None, scope: dict, today: str,
            folder: str, meta: dict, version: str, mode: str) -> dict:  # fmt: skip
    """In a worker process: the view and the zip to push, checked strictly, in a staging folder."""
    from daemon.oneroster.export import package_bytes
    from daemon.oneroster.findings import Mode
    from daemon.oneroster.validate import ValidateOptions, validate_package

    staging = Path(folder)
    view, changes, left_out = views.stage_change(staging, snapshot, base_view, base_snapshot, scope, today)
    sent_as = mode if meta["base_upload_id"] is not None else "bulk"
    if sent_as == "bulk":
        data = package_bytes(view, version)
    else:
        upserts = {e: _upserts(c) for e, c in changes.entities.items()}
        deleted = {e: c.deleted for e, c in changes.entities.items() if c.deleted.height}  # rows: real values
        data = package_bytes(upserts, version, mode="delta", deleted=deleted, modified_at=datetime.now(UTC))
    package = staging / PACKAGE
    write_whole(package, data, mode=None)  # on disk before the prepared marker says the staging folder is whole
    checked = validate_package(package, ValidateOptions(mode=Mode.STRICT, max_dropped_share=0.0))
    summary = {"base_upload_id": meta["base_upload_id"], "mode": sent_as, "version": version, "bytes": len(data),
               "counts": {e: c for e, c in changes.counts().items() if any(c.values())}, "left_out": left_out,
               "verdict": checked.to_dict()["verdict"],
               "errors": [f for f in checked.to_dict()["findings"] if f["severity"] == "error"][:20]}  # fmt: skip
    views.mark_prepared(staging, summary)
    return summary


def _upserts(changes):
    import polars as pl

    updated = changes.updated.drop("changed", strict=False)
    return pl.concat([changes.added, updated], how="diagonal_relaxed") if updated.height else changes.added


class SftpPush(views.LicenceTarget):
    """The running target (outbox.Target) for one `type = "sftp"` table of a tenant."""

    settings: SftpTarget

    def remote_name(self, upload_id: str) -> str:
        name = self.settings.file_name.format(tenant=self.tenant, upload_id=upload_id, target=self.name)
        return f"{self.settings.remote_dir.rstrip('/')}/{name}"

    async def deliver(self, job: Job) -> Outcome:
        d = job.delivery
        meta = {"base_upload_id": d.base_upload_id}
        summary, _reused = await self.prepare(job, prepare, meta, self.settings.version, self.settings.mode)
        result = {**summary, "file": self.remote_name(d.upload_id)}
        if summary["verdict"] != "accepted":  # a bug in the export: never push what rosterd itself refuses
            return permanent("the zip built for this target fails rosterd's own strict validation", result)
        package = views.staging(self.folder, d.upload_id) / PACKAGE
        failure = await self._upload(package, result["file"])
        if failure is not None:
            return failure
        await asyncio.to_thread(views.publish, self.folder, d.upload_id, self.mirror)
        return delivered(result)

    async def probe(self) -> int | str:
        """For `rosterd check-targets`: how many entries the remote folder holds, or what went wrong."""
        listed: list[int] = []

        async def count(sftp: asyncssh.SFTPClient) -> None:
            listed.append(len(await sftp.listdir(self.settings.remote_dir)))

        failure = await self._session(self.settings.remote_dir, count)
        return failure.error or "failed" if failure is not None else listed[0]

    async def _upload(self, package: Path, remote: str) -> Outcome | None:
        async def put(sftp: asyncssh.SFTPClient) -> None:
            partial = remote + PARTIAL_SUFFIX
            await sftp.put(str(package), partial)
            await _replace(sftp, partial, remote)

        return await self._session(remote, put)

    async def _session(self, remote: str, work) -> Outcome | None:
        """Connect (pinned host key, the configured login, strong algorithms), run `work` on an SFTP client;
        None when it went through, else the outcome for the delivery."""
        s = self.settings
        where = f"sftp://{s.auth.username}@{s.host}:{s.port}/{remote}"
        try:
            credentials = await asyncio.to_thread(self._credentials)
        except (asyncssh.KeyImportError, OSError, ValueError, SecretMissing) as err:
            return permanent(f"{where}: the login for this target cannot be used: {err}")
        try:
            pinned = asyncssh.import_public_key(s.host_key)
        except (asyncssh.KeyImportError, ValueError) as err:
            return permanent(f"{where}: host_key is not an OpenSSH public key line: {err}")
        try:
            async with asyncio.timeout(s.timeout_seconds * 4):
                async with asyncssh.connect(
                    s.host, s.port, username=s.auth.username, known_hosts=([pinned], [], []), config=[],
                    agent_path=None, connect_timeout=s.timeout_seconds, **credentials, **client_options(),
                ) as conn, conn.start_sftp_client() as sftp:  # fmt: skip
                    await work(sftp)
        except asyncssh.HostKeyNotVerifiable as err:
            return permanent(f"{where}: the server's host key is not the pinned one ({err}); if the vendor "
                             "changed it, check with them and update host_key")  # fmt: skip
        except asyncssh.PermissionDenied as err:
            return permanent(f"{where}: login refused: {err}")
        except asyncssh.SFTPError as err:
            return retry(f"{where}: SFTP error: {err}")
        except (OSError, asyncssh.Error, TimeoutError) as err:
            return retry(f"{where}: {type(err).__name__}: {err}")
        return None

    def _credentials(self) -> dict:
        """Blocking: read the private key or the password now (never kept)."""
        auth = self.settings.auth
        if auth.key_file is not None:
            return {"client_keys": [asyncssh.read_private_key(auth.key_file)], "password": None}
        return {"client_keys": None, "password": auth.read_secret()}


async def _replace(sftp: asyncssh.SFTPClient, partial: str, final: str) -> None:
    """Rename the complete upload into place, replacing an earlier attempt's file of that name."""
    try:
        await sftp.posix_rename(partial, final)
    except asyncssh.SFTPOpUnsupported:
        if await sftp.exists(final):
            await sftp.remove(final)
        await sftp.rename(partial, final)
