"""What an api target serves across days (daemon/targets/api/publish.py): rosterd's own dateLastModified, kept
while a record's JSON stays the same, and records that left kept as tobedeleted for `tobedeleted_days`.

A small 1.1 district is written below for three days by hand: day 2 renames one student, drops another (with
their enrollment) and adds a third; day 3 brings the dropped student back. Every expected date and status is
written out from the rule in publish.py's docstring, and read back through the Reader as a client would.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from daemon.oneroster import schema
from daemon.snapshots.job import UploadJob, run_job
from daemon.targets.api import publish
from daemon.targets.api.publish import NOW_MARK, PLACEHOLDER, make_visible, publish_target
from daemon.targets.api.query import parse_collection_query, CollectionFields
from daemon.targets.api.reader import Reader

from .packages import package

T1 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
T2 = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)



def csv(entity: str, *rows: dict[str, str]) -> str:
    """A 1.1 CSV with every column of the entity, the rows' values by name, the rest blank."""
    header = [c.name for c in schema.VERSIONS["1.1"].tables[entity].columns]
    lines = [",".join(header)] + [",".join(row.get(name, "") for name in header) for row in rows]
    return "\n".join(lines) + "\n"


ORGS = csv("orgs", {"sourcedId": "d1", "name": "North", "type": "district"},
           {"sourcedId": "s1", "name": "Hill", "type": "school", "parentSourcedId": "d1"})  # fmt: skip
SESSIONS = csv("academicSessions", {"sourcedId": "y1", "title": "2026-2027", "type": "schoolYear",
                                    "startDate": "2026-08-20", "endDate": "2027-06-15",
                                    "schoolYear": "2027"})  # fmt: skip
COURSES = csv("courses", {"sourcedId": "c1", "schoolYearSourcedId": "y1", "title": "Algebra", "orgSourcedId": "d1"})
CLASSES = csv("classes", {"sourcedId": "k1", "title": "Algebra 1", "courseSourcedId": "c1", "classType": "scheduled",
                          "schoolSourcedId": "s1", "termSourcedIds": "y1"})  # fmt: skip


def user(sid: str, role: str, username: str, given: str, family: str) -> dict[str, str]:
    return {"sourcedId": sid, "enabledUser": "true", "orgSourcedIds": "s1", "role": role, "username": username,
            "givenName": given, "familyName": family}  # fmt: skip


def enrollment(sid: str, user_id: str, role: str) -> dict[str, str]:
    return {"sourcedId": sid, "classSourcedId": "k1", "schoolSourcedId": "s1", "userSourcedId": user_id, "role": role}


ANN, BO, CY, DEE = (user("t1", "teacher", "ann", "Ann", "Lee"), user("u1", "student", "bo", "Bo", "Park"),
                    user("u2", "student", "cy", "Cy", "Diaz"), user("u3", "student", "dee", "Dee", "Ng"))  # fmt: skip
BO_RENAMED = {**BO, "familyName": "Parker"}
E_ANN, E_BO, E_CY, E_DEE = (enrollment("e0", "t1", "teacher"), enrollment("e1", "u1", "student"),
                            enrollment("e2", "u2", "student"), enrollment("e3", "u3", "student"))  # fmt: skip

DAYS = {
    1: ([ANN, BO, CY], [E_ANN, E_BO, E_CY]),
    2: ([ANN, BO_RENAMED, DEE], [E_ANN, E_BO, E_DEE]),  # Bo renamed, Cy gone (with e2), Dee new
    3: ([ANN, BO_RENAMED, CY, DEE], [E_ANN, E_BO, E_CY, E_DEE]),  # Cy back
}


def _zip(day: int) -> bytes:
    users, enrollments = DAYS[day]
    return package("1.1", {
        "orgs.csv": ORGS, "academicSessions.csv": SESSIONS, "courses.csv": COURSES, "classes.csv": CLASSES,
        "users.csv": csv("users", *users), "enrollments.csv": csv("enrollments", *enrollments),
    })  # fmt: skip


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("publish")
    made = {}
    for day in DAYS:
        package = root / f"day{day}.zip"
        package.write_bytes(_zip(day))
        outcome = run_job(UploadJob(package, root / f"snapshot{day}"))
        assert outcome.snapshot is not None, outcome.validation["counts_by_code"]
        made[day] = root / f"snapshot{day}"
    return made


class Publisher:
    """Publications one after another, each following the last, as the api target's deliveries make them."""

    def __init__(self, root: Path, days: int = 30) -> None:
        self.root, self.days, self.last, self.count = root, days, None, 0

    def __call__(self, snapshot: Path, at: datetime, scope: dict | None = None) -> Path:
        self.count += 1
        folder = self.root / f"pub{self.count}"
        publish_target(str(snapshot), str(self.last) if self.last else None, scope or {}, ["1.1", "1.2"], self.days,
                       at.date().isoformat(), at.isoformat(), str(folder))  # fmt: skip
        make_visible(folder, at)  # switched in at `at` (target.py does it a moment after the build)
        self.last = folder
        return folder


def served(folder: Path, entity: str, version: str = "1.1", filter_text: str | None = None) -> dict[str, dict]:
    """Every record a client gets from a collection (one page of up to 5000), by sourcedId."""
    fields = CollectionFields(frozenset(publish.json_fields(entity, version)))
    params = [("limit", "5000")] + ([("filter", filter_text)] if filter_text else [])
    reader = Reader()
    page = reader.collection(folder, version, entity, parse_collection_query(params, fields), None, "all")
    moment = reader.publication(folder).moment_text  # what the server fills in for this publication's changes
    records = [json.loads(t.replace(NOW_MARK, f'"dateLastModified":"{moment}"')) for t in page.texts]
    assert page.total == len(records)
    assert [r["sourcedId"] for r in records] == sorted(r["sourcedId"] for r in records)  # tobedeleted in place
    return {r["sourcedId"]: r for r in records}


def lifecycle(records: dict[str, dict]) -> dict[str, tuple[str, str]]:
    return {sid: (r["status"], r["dateLastModified"]) for sid, r in records.items()}


def ms(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_dates_follow_content_and_deletions_stay_as_tobedeleted(snapshots, tmp_path: Path) -> None:
    pub = Publisher(tmp_path)
    first = pub(snapshots[1], T1)
    assert lifecycle(served(first, "users")) == {s: ("active", ms(T1)) for s in ("t1", "u1", "u2")}

    second = pub(snapshots[2], T2)
    for version in ("1.1", "1.2"):
        assert lifecycle(served(second, "users", version)) == {
            "t1": ("active", ms(T1)),  # unchanged: keeps day 1's date
            "u1": ("active", ms(T2)),  # renamed
            "u2": ("tobedeleted", ms(T2)),  # left the roster on day 2
            "u3": ("active", ms(T2)),  # new
        }
        assert lifecycle(served(second, "enrollments", version)) == {
            "e0": ("active", ms(T1)), "e1": ("active", ms(T1)), "e2": ("tobedeleted", ms(T2)),
            "e3": ("active", ms(T2)),
        }  # fmt: skip
    gone = served(second, "users")["u2"]
    assert (gone["givenName"], gone["familyName"], gone["role"]) == ("Cy", "Diaz", "student")  # its last content

    # a delta as consumers pull it: what changed after day 1, deletions included
    delta = served(second, "users", filter_text=f"dateLastModified>'{ms(T1 + timedelta(hours=1))}'")
    assert sorted(delta) == ["u1", "u2", "u3"]
    assert served(second, "orgs", filter_text=f"dateLastModified>'{ms(T1)}'") == {}


def test_tobedeleted_records_go_after_the_configured_days_and_come_back_as_new(snapshots, tmp_path: Path) -> None:
    pub = Publisher(tmp_path, days=30)
    pub(snapshots[1], T1)
    pub(snapshots[2], T2)
    later = pub(snapshots[2], T2 + timedelta(days=10))  # the same roster again (a daily publication)
    assert lifecycle(served(later, "users"))["u2"] == ("tobedeleted", ms(T2))  # still the day it left
    assert lifecycle(served(later, "users"))["t1"] == ("active", ms(T1))
    gone = pub(snapshots[2], T2 + timedelta(days=31))
    assert "u2" not in served(gone, "users") and "e2" not in served(gone, "enrollments")
    back_at = T2 + timedelta(days=32)
    back = pub(snapshots[3], back_at)
    assert lifecycle(served(back, "users"))["u2"] == ("active", ms(back_at))


def test_a_record_back_before_its_days_are_up_is_active_with_a_new_date(snapshots, tmp_path: Path) -> None:
    pub = Publisher(tmp_path)
    pub(snapshots[1], T1)
    pub(snapshots[2], T2)
    back = pub(snapshots[3], T2 + timedelta(days=1))
    assert lifecycle(served(back, "users"))["u2"] == ("active", ms(T2 + timedelta(days=1)))


def test_no_days_means_no_tobedeleted_records(snapshots, tmp_path: Path) -> None:
    pub = Publisher(tmp_path, days=0)
    pub(snapshots[1], T1)
    second = pub(snapshots[2], T2)
    assert sorted(served(second, "users")) == ["t1", "u1", "u3"]


def test_another_polars_version_recomputes_the_comparison_instead_of_changing_every_date(snapshots, tmp_path):
    pub = Publisher(tmp_path)
    first = pub(snapshots[1], T1)
    meta = json.loads((first / publish.META).read_text())
    (first / publish.META).write_text(json.dumps({**meta, "polars": "0.0.1"}))  # hashes from another polars
    again = pub(snapshots[1], T2)
    assert set(lifecycle(served(again, "users")).values()) == {("active", ms(T1))}


def test_stored_hrefs_wait_for_the_servers_base(snapshots, tmp_path: Path) -> None:
    folder = Publisher(tmp_path)(snapshots[1], T1)
    text = pl.read_parquet(publish.entity_file(folder, "1.1", "enrollments"))["_json"][0]
    assert json.loads(text)["user"]["href"] == f"{PLACEHOLDER}/ims/oneroster/v1p1/users/t1"
    assert NOW_MARK in text  # the moment is known only when the publication is switched in


def test_a_scope_that_leaves_nothing_keeps_everything_as_tobedeleted(snapshots, tmp_path: Path) -> None:
    pub = Publisher(tmp_path)
    pub(snapshots[1], T1)
    nothing = pub(snapshots[1], T2, {"orgs": ["no-such-school"]})
    for entity, ids in (("users", {"t1", "u1", "u2"}), ("enrollments", {"e0", "e1", "e2"}), ("classes", {"k1"})):
        assert lifecycle(served(nothing, entity, "1.2")) == dict.fromkeys(ids, ("tobedeleted", ms(T2)))


def test_a_publication_cleared_while_the_current_one_is_looked_for_is_passed_over(tmp_path: Path, monkeypatch) -> None:
    """A switch clears the publications it replaced while a request looks for the current one: the request
    must get the newer publication, not "nothing published yet" (and not an error)."""
    from daemon.targets.api import target as api_target
    from daemon.targets.api.publish import META, make_visible
    from daemon.targets.views import target_folder

    folder = target_folder(tmp_path, "north", "vendor")
    old, new = folder / "u-1@old", folder / "u-2@new"
    for publication, at in ((old, "2026-01-01T00:00:00+00:00"), (new, "2026-01-02T00:00:00+00:00")):
        publication.mkdir(parents=True)
        (publication / META).write_text("{}")
        make_visible(publication, datetime.fromisoformat(at))
    really_complete = api_target.is_complete

    def cleared_after_the_check(publication: Path) -> bool:
        complete = really_complete(publication)
        if publication == old:
            shutil.rmtree(old)  # the switch clears it between the check and the read of its moment
        return complete

    monkeypatch.setattr(api_target, "is_complete", cleared_after_the_check)
    assert api_target.current_publication(tmp_path, "north", "vendor") == new
