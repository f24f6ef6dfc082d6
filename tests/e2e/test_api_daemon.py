"""The OneRoster API with the running daemon: a held upload does not change what it serves until an operator
approves it (then the API serves it, the students it drops as tobedeleted); and the demo client that
`make run` prints answers the curl commands printed with it."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import urllib.error
import urllib.request

import polars as pl
import io
import re
import subprocess
import zipfile

from daemon.generator.generate import generate

from .conftest import SAMPLES, RunningDaemon, Tenant, copy_sample
from .test_holds import SPEC, admin, put, without_students

API_TARGET = '[[tenants.targets]]\ntype = "api"\nname = "vendor"\n'
DEADLINE = 45.0


def api_client(daemon: RunningDaemon, tenant: str, target: str) -> tuple[str, str]:
    made = admin(daemon, "api-client", "add", tenant, target)
    assert made.returncode == 0, made.stderr
    lines = dict(line.split(": ", 1) for line in made.stdout.splitlines())
    return lines["client_id"], lines["client_secret"]


class Api:
    """A client of the daemon's API: a token by HTTP Basic, then GETs with it."""

    def __init__(self, daemon: RunningDaemon, client_id: str, secret: str) -> None:
        self.base = f"http://127.0.0.1:{daemon.wait_for_event('api.started')['port']}"
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        request = urllib.request.Request(f"{self.base}/oauth2/token", data=b"grant_type=client_credentials",
                                         headers={"Authorization": f"Basic {basic}"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as answer:
            self.token = json.load(answer)["access_token"]

    def get(self, path: str) -> tuple[int, dict, dict]:
        request = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, dict(answer.headers), json.load(answer)
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), json.load(error)

    def users(self) -> dict[str, str]:
        status, _headers, body = self.get("/ims/oneroster/v1p1/users?limit=5000")
        assert status == 200, body
        return {u["sourcedId"]: u["status"] for u in body["users"]}


def published(daemon: RunningDaemon, upload_id: str, target: str = "vendor") -> None:
    """Wait until the upload's delivery to the api target (its publication) is recorded as delivered."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        shown = admin(daemon, "outbox", "--format", "json")
        rows = json.loads(shown.stdout) if shown.returncode == 0 else []
        if any(d["upload_id"] == upload_id and d["target"] == target and d["state"] == "delivered" for d in rows):
            return
        time.sleep(0.2)
    raise AssertionError(f"{upload_id} was not published to {target}:\n{daemon.diagnosis()}")


def test_a_held_upload_changes_nothing_served_until_approved(rosterd, tenants: dict[str, Tenant]) -> None:
    daemon = rosterd(dataclasses.replace(tenants["north"], extra=API_TARGET))
    day1 = generate(SPEC)
    first = put(daemon, day1, "day1.zip")
    assert first["state"] == "accepted"
    published(daemon, first["upload_id"])
    api = Api(daemon, *api_client(daemon, "north", "vendor"))
    everyone = set(day1["users"]["sourcedId"].to_list())
    assert api.users() == dict.fromkeys(everyone, "active")

    smaller = without_students(day1, 20)
    held = put(daemon, smaller, "day2.zip")
    assert held["state"] == "held"
    queued = json.loads(admin(daemon, "outbox", "--format", "json").stdout)
    assert not [d for d in queued if d["upload_id"] == held["upload_id"]]  # a held upload queues no publication
    assert api.users() == dict.fromkeys(everyone, "active")  # still day 1

    approved = admin(daemon, "approve", held["upload_id"])
    assert approved.returncode == 0, approved.stderr
    published(daemon, held["upload_id"])
    dropped = everyone - set(smaller["users"]["sourcedId"].to_list())
    assert dropped and api.users() == {sid: "tobedeleted" if sid in dropped else "active" for sid in everyone}
    status, _h, body = api.get(f"/ims/oneroster/v1p1/users/{sorted(dropped)[0]}")
    assert status == 200 and body["user"]["status"] == "tobedeleted"
    kept_student = smaller["users"].filter(pl.col("role") == "student")["sourcedId"][0]
    status, _h, body = api.get(f"/ims/oneroster/v1p1/students/{kept_student}")
    assert status == 200 and body["user"]["status"] == "active"


def printed_commands(daemon: RunningDaemon) -> list[str]:
    """The token and users commands the daemon printed at its latest start (printed just after it started)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        found = re.findall(r"^    (TOKEN=.*\n    curl .*)$", daemon.output(run=-1), re.MULTILINE)
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no curl example printed:\n{daemon.output(run=-1)}")


def test_the_demo_client_answers_the_printed_curl_and_survives_a_restart(rosterd) -> None:
    demo = Tenant("demo", demo=True, extra='[[tenants.targets]]\ntype = "api"\nname = "demo-api"\n')
    daemon = rosterd(demo, fresh_host_keys=True, extra_config="[api]\nport = 0\n")
    commands = printed_commands(daemon)
    copy_sample("valid-1.1-bulk.zip", daemon.client_dir)
    key = daemon.state / "demo_id_ed25519"
    assert daemon.sftp_batch("demo", ["put valid-1.1-bulk.zip inbox/"], key=key).returncode == 0
    receipt = daemon.wait_for_receipt("demo", "valid-1.1-bulk.zip", key=key)
    published(daemon, receipt["upload_id"], "demo-api")
    answer = subprocess.run(["bash", "-c", commands[0]], capture_output=True, text=True, timeout=30)
    with zipfile.ZipFile(SAMPLES / "valid-1.1-bulk.zip") as archive:  # the README's example asks for two users
        first_two = pl.read_csv(io.BytesIO(archive.read("users.csv")))["sourcedId"].sort().head(2).to_list()
    assert [u["sourcedId"] for u in json.loads(answer.stdout)["users"]] == first_two, answer.stderr

    daemon.restart()
    credentials = re.compile(r"-u (\S+:\S+) ")
    assert credentials.findall(printed_commands(daemon)[0]) == credentials.findall(commands[0])  # the same client
