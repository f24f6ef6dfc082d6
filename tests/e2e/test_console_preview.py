"""The console's preview pages with the running daemon: what a licence target and CERS would get from north's
current snapshot, a CERS dry run's groups and files, and who may see them.

north uploads tests/cers/small_district.py's day 1. Its webhook target `vendor` is paused (nothing is sent) and
scoped to the algebra and English courses of Oak Valley High, with a licence per course; its `cers` target is a
dry run. What each page must show is worked out by hand from the roster in small_district.py and README's scope
rule (see tests/console/test_preview.py for the same scope read in full).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

from tests.cers import small_district as sd

from .conftest import RunningDaemon, Tenant
from .console import Browserless, add_account, console_url

DEADLINE = 45.0
VENDOR = """[[tenants.targets]]
type = "webhook"
name = "vendor"
url = "https://vendor.example/roster"
signing = {{ secret_file = {secret} }}
window = {{ paused = true }}
scope = {{ orgs = ["sch-oak"], courses = ["ALG1", "ENG9"], licences = {{ ALG1 = "math-pool", ENG9 = "ela-pool" }} }}
[[tenants.targets]]
type = "cers"
name = "cers"
dry_run = true
"""


def cers_delivery(daemon: RunningDaemon, receipt: dict) -> dict:
    """The upload's CERS delivery from its receipt on disk, once delivered."""
    path = daemon.results("north") / f"{receipt['file']}.{receipt['upload_id']}.json"
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        found = [d for d in json.loads(path.read_text()).get("deliveries", [])
                 if d["target"] == "cers" and d["state"] == "delivered"]  # fmt: skip
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no delivered CERS delivery in {DEADLINE}s\n{daemon.diagnosis()}")


async def test_preview_and_a_dry_runs_files(rosterd, tenants: dict[str, Tenant], tmp_path: Path) -> None:
    secret = tmp_path / "webhook.secret"
    secret.write_text("preview-signing-secret-0123456789abcdef")
    north = dataclasses.replace(tenants["north"], extra=VENDOR.format(secret=json.dumps(str(secret))))
    daemon = rosterd(north, tenants["south"])
    sd.write_package(sd.day1(), daemon.client_dir / "day1.zip")
    assert daemon.sftp_batch("north", ["put day1.zip inbox/day1.zip"]).returncode == 0

    def delivered() -> str:
        receipt = daemon.wait_for_receipt("north", "day1.zip")
        assert receipt["state"] == "accepted", receipt
        return cers_delivery(daemon, receipt)["delivery_id"]

    # the accounts are made (each a `rosterd admin-user` run) while the upload is processed
    district, other, delivery = await asyncio.gather(
        asyncio.to_thread(add_account, daemon, "oak-it", tenant="north"),
        asyncio.to_thread(add_account, daemon, "south-it", tenant="south"), asyncio.to_thread(delivered))
    (written,) = sorted((daemon.results("north") / "cers").glob("*.csv"))
    base = console_url(daemon)

    async with Browserless(base) as browser:
        assert await browser.log_in(district) == 200
        status, classes = await browser.get("/tenants/north/targets/vendor/preview")
        assert status == 200, classes
        assert "cls-oak-alg" in classes and "cls-oak-eng" in classes and "math-pool" in classes
        assert "cls-oak-study" not in classes and "cls-river-art" not in classes
        status, roster = await browser.get("/tenants/north/targets/vendor/preview?class=cls-oak-alg")
        assert status == 200 and "diaz@oak.example" in roster and "s3@students.example" in roster
        assert "s4@students.example" not in roster  # s-4 is in English, not algebra
        _, why = await browser.get("/tenants/north/targets/vendor/preview?class=cls-river-art")
        assert "classes_out_of_scope" in why
        _, gone = await browser.get("/tenants/north/targets/vendor/preview?view=left_out&reason=users_not_in_kept_classes")
        assert all(f"<code>{u}</code>" in gone for u in ("t-kim", "t-new", "s-5", "s-6", "s-7"))
        _, users = await browser.get("/tenants/north/targets/vendor/preview?view=users&q=diaz")
        assert "t-diaz" in users and "t-lee" not in users

        status, groups = await browser.get("/tenants/north/targets/cers/preview")
        assert status == 200 and all(g[1] in groups for g in sd.DAY1_GROUPS)

        status, page = await browser.get(f"/deliveries/{delivery}")
        assert status == 200 and f"/deliveries/{delivery}/files/{written.name}" in page
        status, sent = await browser.get(f"/deliveries/{delivery}/groups")
        assert status == 200 and all(g[1] in sent for g in sd.DAY1_GROUPS) and "added" in sent
        async with browser.session.get(f"{base}/deliveries/{delivery}/files/{written.name}") as answer:
            assert answer.status == 200 and await answer.read() == written.read_bytes()
        for name in ("..%2F..%2Flatest.json", "latest.json", "..%2Fday1.zip.json", "other.csv"):
            status, _ = await browser.get(f"/deliveries/{delivery}/files/{name}")
            assert status == 404, name

    async with Browserless(base) as browser:  # another tenant's account sees none of it
        assert await browser.log_in(other) == 200
        for path in ("/tenants/north/targets/vendor/preview", "/tenants/north/targets/cers/preview",
                     f"/deliveries/{delivery}/groups", f"/deliveries/{delivery}/files/{written.name}"):  # fmt: skip
            status, _ = await browser.get(path)
            assert status == 404, path
