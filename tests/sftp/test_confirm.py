"""Replicas (ServerOptions.confirm_uploads): the answer to the close that completes an upload, or to the rename
that completes a `.filepart` one, waits until the daemon says the upload is recorded, and is a failure when it
is not, so that the SIS sends the file again. Driven with the real OpenSSH client."""

from __future__ import annotations

import asyncio
from pathlib import Path

from daemon.sftp import UploadReceived

from .conftest import StartServer, needs_openssh, write_random

pytestmark = needs_openssh


class Recorder:
    """Stands for intake: answers each completed upload with `recorded`, once `release` is set."""

    def __init__(self, recorded: bool) -> None:
        self.recorded = recorded
        self.release = asyncio.Event()
        self.uploads: list[UploadReceived] = []

    def __call__(self, event: UploadReceived) -> asyncio.Task[bool]:
        self.uploads.append(event)
        return asyncio.get_running_loop().create_task(self._answer())

    async def _answer(self) -> bool:
        await self.release.wait()
        return self.recorded


async def test_a_close_is_answered_once_the_upload_is_recorded(start: StartServer, tmp_path: Path) -> None:
    recorder = Recorder(recorded=True)
    server = await start(on_upload=recorder, confirm_uploads=True)
    write_random(server.workdir / "day1.zip", 10_000)
    client = await server.start_sftp("acme", ["put day1.zip inbox/day1.zip"])
    await server.wait_for(lambda: len(recorder.uploads) == 1)
    recorder.release.set()  # (that the close waits for this is shown by the next test, whose answer says no)
    assert await asyncio.wait_for(client.wait(), 30) == 0


async def test_an_upload_that_could_not_be_recorded_fails_its_close(start: StartServer, tmp_path: Path) -> None:
    recorder = Recorder(recorded=False)
    recorder.release.set()
    server = await start(on_upload=recorder, confirm_uploads=True)
    write_random(server.workdir / "day1.zip", 10_000)
    result = await server.sftp("acme", ["put day1.zip inbox/day1.zip"])
    # OpenSSH shows the status (SSH_FX_FAILURE), not the server's text ("... send it again")
    assert result.returncode != 0 and "close remote: Failure" in result.output, result.output
    assert [u.name for u in recorder.uploads] == ["day1.zip"]
    assert [f["name"] for f in server.named("upload.unconfirmed")] == ["day1.zip"]

    # a .filepart upload is completed by its rename: that rename fails the same way
    result = await server.sftp("acme", ["put day1.zip inbox/day2.zip.filepart",
                                        "rename inbox/day2.zip.filepart inbox/day2.zip"])  # fmt: skip
    assert result.returncode != 0 and "Failure" in result.output and "rename" in result.output, result.output
    assert [u.name for u in recorder.uploads] == ["day1.zip", "day2.zip"]


async def test_without_replicas_the_close_does_not_wait(start: StartServer, tmp_path: Path) -> None:
    recorder = Recorder(recorded=False)  # never released: a close that waited would never be answered
    server = await start(on_upload=recorder)
    write_random(server.workdir / "day1.zip", 10_000)
    result = await server.sftp("acme", ["put day1.zip inbox/day1.zip"])
    assert result.returncode == 0, result.output
    assert [u.name for u in recorder.uploads] == ["day1.zip"]
    recorder.release.set()
