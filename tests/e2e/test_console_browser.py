"""The admin console in a real browser: headless Chromium (Debian's, /usr/bin/chromium, installed by `make test`)
driven by Playwright, against one running daemon shared by the module.

What a person does in the console, through its pages only: log in with a password, and with a code from an
authenticator app; watch an upload appear on the overview without reloading (the page's live updates over
/events); read an upload's findings, filter and page them, and download them as CSV; approve a held upload with
a reason; replay a delivery that died; log out. The expected findings are read from the sample zip by the rules
written out below (which column of which file holds what), never from rosterd's own output.

Each test saves full-page screenshots of the pages it visits into its tmp dir, and into the folder
ROSTERD_SCREENSHOTS names when that is set (tests/e2e/screenshots holds the committed ones).

The daemon's tenants: `north` sends to a webhook vendor whose first answer is 400 (so its first delivery dies),
`south` holds an upload that deletes more than 1% of its users, `east` has nothing configured but its inbox.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import re
import shutil
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.fakes.threaded import served_in_thread
from tests.fakes.webhooks import WebhookReceiver

from .conftest import FINAL_STATES, SAMPLES, RunningDaemon, Tenant, make_tenant
from .console import Account, add_account, console_url

pytestmark = pytest.mark.xdist_group("console_browser")

CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright's own browser download is not used
VIEWPORT = {"width": 1280, "height": 800}
DEADLINE = 45.0  # seconds for an upload to be validated or a delivery to move on
WAIT_MS = 30_000  # Playwright's waits (expect, clicks, navigation)
SECRET = "console-browser-signing-secret-0123456789"
OUTBOX = "[outbox]\nretry_first_seconds = 0.2\nretry_max_seconds = 1\npoll_seconds = 0.3\n"
REFUSALS = {("POST", "/login", 401)}  # the answers >= 400 a test may cause on purpose: a wrong login
LOGIN_REFUSED = "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
FINDINGS_HEADER = ["code", "severity", "file", "row", "column", "value", "sourcedId", "message"]


# -- what the sample says, read by hand -------------------------------------------------------------------------


def sample_table(sample: str, file: str) -> list[list[str]]:
    """The CSV lines of `file` in the sample zip (any folder), header first, as a spreadsheet would read them."""
    with zipfile.ZipFile(SAMPLES / sample) as package:
        (member,) = [n for n in package.namelist() if n.rsplit("/", 1)[-1] == file]
        return list(csv.reader(io.StringIO(package.read(member).decode("utf-8-sig"), newline="")))


def lenient_findings() -> list[tuple[str, str, str, str, str]]:
    """(code, file, row, column, value) of each finding lenient-excel-export.zip should have, as the page shows
    them (text; '' for none). Rows are counted as a person sees them in the file: the header is row 1.

    samples/README.md: everything sits in an `export/` folder; orgs.csv's header says `SourcedId`;
    enrollments.primary is TRUE/FALSE; 3 bulk course rows have status and dateLastModified filled in."""
    expected = [("zip.top_level_folder", "", "", "", "export"),
                ("header.column_case", "orgs.csv", "1", "SourcedId", "SourcedId")]  # fmt: skip
    enrollments = sample_table("lenient-excel-export.zip", "enrollments.csv")
    primary = enrollments[0].index("primary")
    for number, line in enumerate(enrollments[1:], start=2):
        assert line[primary] in ("TRUE", "FALSE"), line
        expected.append(("row.invalid_boolean", "enrollments.csv", str(number), "primary", line[primary]))
    courses = sample_table("lenient-excel-export.zip", "courses.csv")
    for number, line in enumerate(courses[1:], start=2):
        for column in ("status", "dateLastModified"):
            if value := line[courses[0].index(column)]:
                expected.append(("row.field_forbidden_in_bulk", "courses.csv", str(number), column, value))
    return sorted(expected)


def codes_of(findings: list[tuple[str, ...]]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for finding in findings:
        counted[finding[0]] = counted.get(finding[0], 0) + 1
    return counted


# -- the daemon, the vendor, the browser ---------------------------------------------------------------------


@dataclasses.dataclass
class Console:
    daemon: RunningDaemon
    url: str
    admin: Account
    viewer: Account  # a viewer with TOTP
    vendor: WebhookReceiver
    browser: Browser


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, tenants: dict[str, Tenant],
            host_keys: Path) -> Iterator[Console]:  # fmt: skip
    """The daemon (with north's and south's first uploads on their way) and Chromium, started side by side."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `make test`, which installs Debian's chromium")
    home = tmp_path_factory.mktemp("console-browser")
    secret_file = home / "webhook.secret"
    secret_file.write_text(SECRET)
    with contextlib.ExitStack() as closing:
        vendor = closing.enter_context(served_in_thread(WebhookReceiver(SECRET)))
        vendor.faults.append("400")  # the first delivery is refused for good: it dies
        webhook = "\n".join([
            "[[tenants.targets]]", 'type = "webhook"', 'name = "vendor"', f"url = {json.dumps(vendor.url)}",
            "timeout_seconds = 5", f"signing = {{ secret_file = {json.dumps(str(secret_file))} }}",
        ])  # fmt: skip
        chosen = [
            dataclasses.replace(tenants["north"], extra=webhook),
            dataclasses.replace(tenants["south"], extra="holds = { users_deleted_share = 0.01 }"),
            make_tenant(home, "east", key=False),
        ]
        daemon = RunningDaemon(home / "daemon", chosen, host_keys, OUTBOX)
        closing.callback(daemon.close)
        pool = closing.enter_context(ThreadPoolExecutor(2))
        started = pool.submit(daemon.start)
        playwright = closing.enter_context(sync_playwright())
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])  # tests run as root
        closing.callback(browser.close)
        started.result()
        upload(daemon, "north", "lenient-excel-export.zip")  # validated while the accounts are made
        upload(daemon, "south", "valid-1.1-bulk.zip")
        admin = pool.submit(add_account, daemon, "alice", role="admin")
        viewer = pool.submit(add_account, daemon, "tomas", role="viewer", totp=True)
        yield Console(daemon, console_url(daemon), admin.result(), viewer.result(), vendor, browser)


@pytest.fixture
def page(console: Console) -> Iterator[Page]:
    """A fresh browser profile (no cookies) per test; a script error or a refused request fails the test."""
    context = console.browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    opened.on("console", lambda message: message.type == "error" and (message.location["url"], message.text) != (
        f"{console.url}/login", LOGIN_REFUSED) and problems.append(f"console: {message.text} ({message.location})"))
    opened.on("response", lambda answer: answer.status >= 400 and (answer.request.method, urlsplit(
        answer.url).path, answer.status) not in REFUSALS and problems.append(
        f"{answer.status} for {answer.request.method} {answer.url}"))  # fmt: skip
    try:
        yield opened
    finally:
        context.close()
    assert not problems, problems


def screenshot(page: Page, tmp_path: Path, name: str) -> None:
    """The whole page as PNG, into the test's tmp dir and into $ROSTERD_SCREENSHOTS when set."""
    image = page.screenshot(full_page=True, animations="disabled")
    folders = [tmp_path]
    if os.environ.get("ROSTERD_SCREENSHOTS"):
        folders.append(Path(os.environ["ROSTERD_SCREENSHOTS"]))
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.png").write_bytes(image)


def log_in(page: Page, console: Console, account: Account, code: str = "", path: str = "/") -> None:
    page.goto(console.url + path)
    expect(page).to_have_url(re.compile(r"/login"))
    page.get_by_label("Name").fill(account.name)
    page.get_by_label("Password").fill(account.password)
    if code:
        page.get_by_label("Code from your authenticator app").fill(code)
    page.get_by_role("button", name="Log in").click()


# -- uploads, as the SIS makes them ----------------------------------------------------------------------------


def upload(daemon: RunningDaemon, tenant: str, sample: str) -> None:
    """The sample dropped into the tenant's inbox, as the SFTP server would have written it."""
    shutil.copy(SAMPLES / sample, daemon.inbox(tenant) / sample)


def final_receipt(daemon: RunningDaemon, tenant: str, sample: str) -> dict:
    """The final receipt of the tenant's upload `sample` in results/ (read on disk), waited for."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        for path in daemon.results(tenant).glob(f"{sample}.u-*.json"):
            with contextlib.suppress(ValueError, OSError):
                receipt = json.loads(path.read_text())
                if receipt.get("state") in FINAL_STATES:
                    return receipt
        time.sleep(0.1)
    raise AssertionError(f"no final receipt for {tenant}/{sample} in {DEADLINE}s\n{daemon.diagnosis()}")


@pytest.fixture(scope="module")
def north_upload(console: Console) -> dict:
    """lenient-excel-export.zip (put in the inbox at the start), accepted with warnings; its delivery to the
    vendor dies (400)."""
    receipt = final_receipt(console.daemon, "north", "lenient-excel-export.zip")
    assert receipt["state"] == "accepted", receipt
    return receipt


@pytest.fixture(scope="module")
def held_upload(console: Console) -> dict:
    """south's day 1 (the bulk sample, put in the inbox at the start), then the day-2 delta that withdraws 3 of
    46 users: held (over 1%)."""
    assert final_receipt(console.daemon, "south", "valid-1.1-bulk.zip")["state"] == "accepted"
    upload(console.daemon, "south", "valid-1.1-delta.zip")
    receipt = final_receipt(console.daemon, "south", "valid-1.1-delta.zip")
    assert receipt["state"] == "held", receipt
    return receipt


# -- the tests ----------------------------------------------------------------------------------------------


def test_log_in_with_a_password_and_log_out(page: Page, console: Console) -> None:
    log_in(page, console, console.admin, path="/holds")  # a page asked for before logging in is where it ends
    expect(page).to_have_url(console.url + "/holds")
    expect(page.locator("header .who")).to_have_text("alice · admin")
    expect(page.get_by_role("heading", name="Held uploads")).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(console.url + "/login")
    expect(page.locator("header .who")).to_have_count(0)
    page.goto(console.url + "/")  # the session is over: the overview sends to the login form again
    expect(page).to_have_url(console.url + "/login")


def test_log_in_with_a_code_from_an_authenticator_app(page: Page, console: Console) -> None:
    viewer = console.viewer
    assert viewer.totp_secret, "rosterd admin-user add --totp printed no secret"
    log_in(page, console, viewer)  # the password alone is not enough
    expect(page.get_by_role("alert")).to_have_text("Wrong name, password or code.")
    expect(page).to_have_url(console.url + "/login")

    log_in(page, console, viewer, code=pyotp.TOTP(viewer.totp_secret).now())
    expect(page).to_have_url(console.url + "/")
    expect(page.locator("header .who")).to_have_text("tomas · viewer")
    expect(page.get_by_role("heading", name="Tenants")).to_be_visible()


def test_an_upload_appears_on_the_overview_without_reloading(page: Page, console: Console, tmp_path: Path) -> None:
    log_in(page, console, console.admin)
    expect(page).to_have_url(console.url + "/")
    row = page.locator("tr[data-tenant=east]")
    expect(row).to_contain_text("none yet")
    expect(row.locator(".badge")).to_have_text("warn")  # no accepted upload yet
    expect(page.locator("[data-live-status]")).to_have_class(re.compile(r"\bon\b"))  # the event stream is open
    page.evaluate("window.sameDocument = true")  # gone if the page were loaded again

    upload(console.daemon, "east", "valid-1.1-bulk.zip")
    expect(row).to_contain_text("valid-1.1-bulk.zip", timeout=DEADLINE * 1000)
    expect(row.locator(".state")).to_have_text("accepted", timeout=DEADLINE * 1000)
    expect(row.locator(".badge")).to_have_text("ok")
    expect(row.locator("td").nth(6)).to_have_text("")  # no problems left
    assert page.evaluate("window.sameDocument") is True, "the overview was reloaded, not updated in place"
    screenshot(page, tmp_path, "overview")

    row.get_by_role("link", name="east").click()
    expect(page).to_have_url(console.url + "/tenants/east")
    uploads = page.locator("table.uploads tbody tr")
    expect(uploads).to_have_count(1)
    expect(uploads.first).to_contain_text("valid-1.1-bulk.zip")
    expect(uploads.first.locator(".state")).to_have_text("accepted")
    entities = ["orgs", "academicSessions", "courses", "classes", "users", "enrollments", "demographics"]  # its files
    expect(page.locator("ul.legend li")).to_have_text(entities)
    expect(page.locator("svg.chart circle")).to_have_count(len(entities))  # one snapshot: a point per entity
    screenshot(page, tmp_path, "tenant")


def shown_findings(page: Page) -> list[tuple[str, str, str, str, str]]:
    """(code, file, row, column, value) of each row of the findings table on the page."""
    cells = page.locator("table.findings tbody tr").evaluate_all(
        "rows => rows.map(r => Array.from(r.cells, c => c.textContent.trim()))")  # fmt: skip
    return [(c[0], c[2], c[3], c[4], c[5]) for c in cells]


def downloaded_csv(page: Page) -> list[dict[str, str]]:
    with page.expect_download() as started:
        page.get_by_role("link", name="Download CSV").click()
    download = started.value
    assert re.fullmatch(r"findings-u-[\w-]+\.csv", download.suggested_filename), download.suggested_filename
    text = Path(download.path()).read_text(encoding="utf-8")
    table = list(csv.reader(io.StringIO(text, newline="")))
    assert table[0] == FINDINGS_HEADER
    return [dict(zip(FINDINGS_HEADER, line, strict=True)) for line in table[1:]]


def as_shown(rows: list[dict[str, str]]) -> list[tuple[str, str, str, str, str]]:
    return sorted((r["code"], r["file"], r["row"], r["column"], r["value"]) for r in rows)


def test_findings_filtered_paged_and_downloaded(page: Page, console: Console, north_upload: dict,
                                                tmp_path: Path) -> None:  # fmt: skip
    expected = lenient_findings()
    assert len(expected) == 204  # 1 folder + 1 header + 196 enrollments + 3 course rows x 2 fields
    log_in(page, console, console.admin, path="/tenants/north")
    page.locator("table.uploads").get_by_role("link", name=north_upload["upload_id"]).click()
    expect(page).to_have_url(console.url + f"/uploads/{north_upload['upload_id']}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("lenient-excel-export.zip")
    expect(page.locator("h1 .state")).to_have_text("accepted")
    findings = page.locator("#findings")
    expect(findings).to_contain_text("Validated as OneRoster 1.1 (lenient)")

    counts = page.locator("table.codes tbody tr").evaluate_all(
        "rows => rows.map(r => [r.cells[0].textContent.trim(), r.cells[1].textContent.trim()])")  # fmt: skip
    assert {code: int(n.replace(",", "")) for code, n in counts} == codes_of(expected)
    expect(findings).to_contain_text("204 findings; page 1 of 3.")
    first = shown_findings(page)
    assert len(first) == 100 and set(first) <= set(expected)

    # every page, through its Next links: all the findings, once each
    seen = list(first)
    for number in (2, 3):
        page.get_by_role("link", name="Next ›").click()
        expect(findings).to_contain_text(f"204 findings; page {number} of 3.")
        seen += shown_findings(page)
    expect(page.get_by_role("link", name="Next ›")).to_have_count(0)
    expect(page.get_by_role("link", name="‹ Previous")).to_have_attribute("href", re.compile(r"page=2#findings$"))
    assert sorted(seen) == expected

    # the whole list as CSV (the filter picks everything): the same findings, with their severity
    everything = downloaded_csv(page)
    assert as_shown(everything) == expected
    assert {r["severity"] for r in everything} == {"warning"} and all(r["message"] for r in everything)

    # filtered by code, with the form as a person uses it
    page.get_by_label("Code").select_option("row.field_forbidden_in_bulk")
    page.get_by_role("button", name="Filter").click()
    expect(findings).to_contain_text("6 findings; page 1 of 1.")
    forbidden = [f for f in expected if f[0] == "row.field_forbidden_in_bulk"]
    assert sorted(shown_findings(page)) == forbidden
    expect(page.locator("table.codes tr.chosen")).to_contain_text("row.field_forbidden_in_bulk")
    assert as_shown(downloaded_csv(page)) == sorted(shown_findings(page)) == forbidden
    screenshot(page, tmp_path, "upload-findings")

    # another code, from the table of codes: two pages of it
    page.locator("table.codes").get_by_role("link", name="row.invalid_boolean").click()
    expect(findings).to_contain_text("196 findings; page 1 of 2.")
    expect(page.get_by_label("Code")).to_have_value("row.invalid_boolean")
    booleans = shown_findings(page)
    page.get_by_role("link", name="Next ›").click()
    expect(findings).to_contain_text("196 findings; page 2 of 2.")
    booleans += shown_findings(page)
    assert sorted(booleans) == [f for f in expected if f[0] == "row.invalid_boolean"]
    assert as_shown(downloaded_csv(page)) == sorted(booleans)

    page.get_by_label("Code").select_option("")  # any code; a text found in a column's name or a message
    page.get_by_label("Text").fill("dateLastModified")
    page.get_by_role("button", name="Filter").click()
    dated = [f for f in expected if f[3] == "dateLastModified"]
    expect(findings).to_contain_text(f"{len(dated)} findings; page 1 of 1.")
    assert sorted(shown_findings(page)) == dated


def test_approve_a_held_upload_with_a_reason(page: Page, console: Console, held_upload: dict,
                                             tmp_path: Path) -> None:  # fmt: skip
    held_id = held_upload["upload_id"]
    log_in(page, console, console.admin, path="/holds")
    section = page.locator("section.hold").filter(has_text=held_id)
    expect(section.locator(".state")).to_have_text("held")
    expect(section.locator("table.crossed")).to_contain_text("users_deleted_share")
    expect(section).to_contain_text("Would delete from users: 3 rows")  # the delta withdraws 3 students
    screenshot(page, tmp_path, "holds")

    section.get_by_role("link", name=held_id).click()
    expect(page).to_have_url(console.url + f"/uploads/{held_id}")
    expect(page.locator("h1 .state")).to_have_text("held")
    asked: list[str] = []

    def answer(dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer)
    page.get_by_label("Reason").fill("district confirmed the 3 withdrawals")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("p.flash")).to_have_text(f"{held_id} is now accepted.")
    expect(page.locator("h1 .state")).to_have_text("accepted")
    assert asked == ["Apply this upload? Its changes become the current roster."]
    expect(page.locator("form.decide")).to_have_count(0)
    decisions = page.get_by_role("heading", name="Decisions").locator("xpath=..")
    expect(decisions).to_contain_text("approved by alice (console, 127.0.0.1; reason: district confirmed the 3 "
                                      "withdrawals)")  # fmt: skip

    receipt_file = console.daemon.results("south") / f"valid-1.1-delta.zip.{held_id}.json"
    deadline = time.monotonic() + DEADLINE
    while (receipt := json.loads(receipt_file.read_text()))["state"] != "accepted":
        assert time.monotonic() < deadline, receipt
        time.sleep(0.1)
    (decision,) = receipt["decisions"]
    assert decision["decision"] == "approved"
    assert decision["operator"] == "alice (console, 127.0.0.1; reason: district confirmed the 3 withdrawals)"

    page.get_by_role("link", name="Holds").click()
    expect(page.locator("section.hold").filter(has_text=held_id)).to_have_count(0)


def reload_until(page: Page, locator, text: str) -> None:
    """Reload the page (it has no live part) until `locator` reads `text`."""
    deadline = time.monotonic() + DEADLINE
    while True:
        with contextlib.suppress(AssertionError):
            expect(locator).to_have_text(text, timeout=500)
            return
        assert time.monotonic() < deadline, f"still {locator.all_text_contents()} after {DEADLINE}s"
        page.reload()


def test_replay_a_dead_delivery(page: Page, console: Console, north_upload: dict, tmp_path: Path) -> None:
    upload_id = north_upload["upload_id"]
    log_in(page, console, console.admin, path="/tenants/north")
    page.get_by_role("link", name="vendor", exact=True).click()
    expect(page).to_have_url(console.url + "/tenants/north/targets/vendor")
    outbox = page.locator("table.deliveries tbody tr").filter(has_text=upload_id)
    reload_until(page, outbox.locator(".state"), "dead")
    expect(outbox).to_contain_text("HTTP 400")
    screenshot(page, tmp_path, "target-outbox")

    outbox.locator("td").first.get_by_role("link").click()
    expect(page).to_have_url(re.compile(r"/deliveries/"))
    expect(page.locator("h1 .state")).to_have_text("dead")
    expect(page.locator("dl.facts")).to_contain_text("HTTP 400")
    assert [s.status for s in console.vendor.requests] == [400]
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Replay").click()
    expect(page.locator("p.flash")).to_have_text(re.compile(r"^d-\S+ is queued again\.$"))
    reload_until(page, page.locator("h1 .state"), "delivered")
    assert [s.status for s in console.vendor.requests] == [400, 200]
    assert {b["upload_id"] for b in console.vendor.batches} == {upload_id}
    assert console.vendor.anomalies == []
    screenshot(page, tmp_path, "delivery")
