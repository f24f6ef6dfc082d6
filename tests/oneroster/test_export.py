"""Snapshots written back out as OneRoster packages: strict validation accepts them, ingesting them gives the
same snapshot (same version), the people, classes and enrollments survive a version change, a delta applied
on day 1 gives day 2, and the same input always gives the same bytes."""

from __future__ import annotations

import io
import itertools
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.snapshots.diff import diff_snapshots
from daemon.snapshots.job import UploadJob, run_job
from daemon.oneroster import schema
from daemon.generator.churn import Churn, churn
from daemon.oneroster.export import ExportError, package_bytes, package_tables, write_package
from daemon.oneroster.findings import Mode, Severity
from daemon.generator.generate import DistrictSpec, generate, write_zip
from daemon.oneroster.validate import ValidateOptions, validate_package
from daemon.snapshots.storage import read_frames

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SPEC = {"schools": 3, "students_per_school": 25, "teachers_per_school": 3, "enrollments_per_student": 4, "seed": 7}
WHEN = datetime(2026, 11, 21, 6, 15, 30, 250_000, tzinfo=UTC)
WHEN_TEXT = "2026-11-21T06:15:30.250Z"
SOURCES = ("sample-1.1", "sample-1.2", "generated-1.1", "generated-1.2")
Frames = dict[str, pl.DataFrame]
_count = itertools.count()


@dataclass(frozen=True)
class Snapshot:
    version: str
    folder: Path
    frames: Frames


def ingest(package: Path | bytes, folder: Path, base: Path | None = None) -> Snapshot:
    """The worker's job on a zip (path or bytes) into `folder`, as the daemon does; fails unless accepted."""
    if isinstance(package, bytes):
        path = folder.parent / f"{folder.name}.zip"
        path.write_bytes(package)
        package = path
    outcome = run_job(UploadJob(package, folder, base))
    assert outcome.snapshot is not None, outcome.validation["findings"][:5]
    return Snapshot(outcome.snapshot.version, folder, read_frames(folder))


def strictly_valid(data: bytes, tmp: Path):
    """The package's strict validation, asserted accepted without a single error."""
    path = tmp / f"strict-{next(_count)}.zip"
    path.write_bytes(data)
    result = validate_package(path, ValidateOptions(mode=Mode.STRICT))
    errors = [f for f in result.findings.items if f.severity is Severity.ERROR]
    assert result.verdict == "accepted" and not errors, errors[:5]
    return result


def unchanged(old: Frames, new: Frames) -> None:
    changes = diff_snapshots(old, new)
    assert changes.is_empty(), {e: c for e, c in changes.counts().items() if any(c.values())}
    assert {e: f.height for e, f in old.items()} == {e: f.height for e, f in new.items()}


def entries(data: bytes) -> dict[str, str]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name).decode() for name in archive.namelist()}


def items(*values: str) -> pl.Expr:
    """A List(String) literal for every row."""
    return pl.lit(pl.Series([list(values)], dtype=pl.List(pl.String))).first()


def read_csv(text: str) -> pl.DataFrame:
    return pl.read_csv(io.StringIO(text), infer_schema=False)


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory) -> dict[str, Snapshot]:
    root = tmp_path_factory.mktemp("snapshots")
    made = {}
    for name in SOURCES:
        kind, version = name.split("-")
        package = SAMPLES / f"valid-{version}-bulk.zip"
        if kind == "generated":
            package = root / f"{name}.zip"
            write_zip(generate(DistrictSpec(**SPEC, version=version)), package, version)
        made[name] = ingest(package, root / name)
    return made


# --- same version ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_a_snapshot_exported_in_its_version_is_valid_and_ingests_to_itself(snapshots, source, tmp_path) -> None:
    snap = snapshots[source]
    data = package_bytes(snap.frames, snap.version)
    strictly_valid(data, tmp_path)
    unchanged(snap.frames, ingest(data, tmp_path / "again").frames)


def test_the_zip_holds_the_manifest_and_the_files_in_the_versions_order(snapshots) -> None:
    snap = snapshots["sample-1.2"]
    files = entries(package_bytes(snap.frames, "1.2"))
    tables = schema.VERSIONS["1.2"].tables
    assert list(files) == ["manifest.csv", *(t.file for e, t in tables.items() if e in snap.frames)]
    manifest = dict(read_csv(files["manifest.csv"]).iter_rows())
    assert manifest["oneroster.version"] == "1.2" and manifest["manifest.version"] == "1.0"
    assert {k[5:]: v for k, v in manifest.items() if k.startswith("file.")} == {
        e: "bulk" if e in snap.frames else "absent" for e in tables
    }
    assert manifest["source.systemName"] == "rosterd"
    users = files["users.csv"].splitlines()
    assert users[0] == ",".join(tables["users"].names)
    assert users[1].startswith("stu-0001-0001,,,true,") and '"{CA-SSID:' in users[1]  # bulk: lifecycle blank
    sessions = read_csv(files["academicSessions.csv"])
    assert sessions["schoolYear"].to_list() == ["2027"] * 3 and sessions["startDate"][0] == "2026-08-15"


def test_the_same_input_gives_the_same_bytes(snapshots) -> None:
    snap = snapshots["generated-1.2"]
    data = package_bytes(snap.frames, "1.2")
    assert package_bytes(snap.frames, "1.2") == data
    shuffled = {e: f.sample(fraction=1.0, shuffle=True, seed=3).lazy() for e, f in reversed(snap.frames.items())}
    assert package_bytes(shuffled, "1.2") == data
    delta = package_bytes({"users": snap.frames["users"].head(3)}, "1.2", mode="delta", modified_at=WHEN,
                          deleted={"enrollments": ["enr-0001-0001-1"]})  # fmt: skip
    assert delta == package_bytes({"users": snap.frames["users"].head(3)}, "1.2", mode="delta", modified_at=WHEN,
                                  deleted={"enrollments": pl.Series(["enr-0001-0001-1"])})  # fmt: skip


def test_metadata_columns_survive_at_the_end_by_name(snapshots, tmp_path) -> None:
    snap = snapshots["generated-1.1"]
    licence = pl.when(pl.col("sourcedId").str.contains("-p1")).then(pl.lit("maths, full")).otherwise(pl.lit("basic"))
    frames = {**snap.frames,
              "classes": snap.frames["classes"].with_columns(licence.alias("metadata.licence"),
                                                             pl.lit("x").alias("metadata.a")),
              "enrollments": snap.frames["enrollments"].with_columns(licence.alias("metadata.licence"))}  # fmt: skip
    data = package_bytes(frames, "1.1")
    strictly_valid(data, tmp_path)
    header = entries(data)["classes.csv"].splitlines()[0]
    assert header.endswith(",periods,metadata.a,metadata.licence")
    back = ingest(data, tmp_path / "back").frames
    unchanged(frames, back)
    assert back["enrollments"]["metadata.licence"].value_counts().height == 2


def test_values_with_commas_quotes_and_unicode_survive(snapshots, tmp_path) -> None:
    snap = snapshots["sample-1.1"]
    names = ['Smith, Jr.', 'Robert "Bobby"', '"quoted"', "Zoë 李 🎓", " padded ", "a,\"b\",c", "O'Brien"]
    users = snap.frames["users"].with_row_index("_i").with_columns(
        familyName=pl.lit(pl.Series(names)).gather(pl.col("_i") % len(names)),
        middleName=pl.lit("ünï, cödé"),
        userIds=items('{LDAP:a"b}', "{SIS:é}"),
    ).drop("_i")
    frames = {**snap.frames, "users": users}
    data = package_bytes(frames, "1.1")
    strictly_valid(data, tmp_path)
    unchanged(frames, ingest(data, tmp_path / "back").frames)


_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n\x00"), min_size=1, max_size=30)
_ITEM = _TEXT.filter(lambda s: "," not in s and s == s.strip())


def test_any_text_round_trips(snapshots, tmp_path) -> None:
    """Text without line breaks (the one thing OneRoster CSV cannot hold) comes back as itself."""
    snap = snapshots["sample-1.2"]
    first = pl.col("sourcedId") == snap.frames["users"]["sourcedId"].min()

    @settings(max_examples=12, deadline=None)  # each example exports and re-reads a whole package
    @given(family=_TEXT, extra=_TEXT, subjects=st.lists(_ITEM, min_size=1, max_size=3))
    def round_trip(family: str, extra: str, subjects: list[str]) -> None:
        users = snap.frames["users"].with_columns(
            familyName=pl.when(first).then(pl.lit(family)).otherwise("familyName"),
            **{"metadata.note": pl.when(first).then(pl.lit(extra))},
        )
        courses = snap.frames["courses"].with_columns(subjects=items(*subjects),
                                                      subjectCodes=items(*["0"] * len(subjects)))  # fmt: skip
        frames = {**snap.frames, "users": users, "courses": courses}
        data = package_bytes(frames, "1.2")
        strictly_valid(data, tmp_path)
        unchanged(frames, ingest(data, tmp_path / f"back-{next(_count)}").frames)

    round_trip()


# --- another version ------------------------------------------------------------------------------------

PEOPLE = ["sourcedId", "enabledUser", "username", "userIds", "givenName", "familyName", "middleName", "identifier",
          "email", "agentSourcedIds", "grades"]  # fmt: skip


def same_rows(old: pl.DataFrame, new: pl.DataFrame, columns: list[str]) -> None:
    assert old.height == new.height
    assert old.select(columns).sort("sourcedId").equals(new.select(columns).sort("sourcedId"))


@pytest.mark.parametrize("source", SOURCES)
def test_a_snapshot_exported_in_the_other_version_keeps_people_classes_and_enrollments(
    snapshots, source, tmp_path
) -> None:  # fmt: skip
    snap = snapshots[source]
    other = "1.2" if snap.version == "1.1" else "1.1"
    data = package_bytes(snap.frames, other)
    strictly_valid(data, tmp_path)
    back = ingest(data, tmp_path / "other")
    assert back.version == other
    same_rows(snap.frames["users"], back.frames["users"], PEOPLE)
    for entity in ("orgs", "academicSessions", "courses", "classes", "enrollments"):
        unchanged({entity: snap.frames[entity]}, {entity: back.frames[entity]})
    assert back.frames["demographics"].height == snap.frames["demographics"].height
    one_role = back if other == "1.2" else snap  # every generated user has one role at one school
    roles = one_role.frames["roles"].select("userSourcedId", "role", "orgSourcedId").sort("userSourcedId")
    users = (back if other == "1.1" else snap).frames["users"]
    expected = users.select(userSourcedId="sourcedId", role="role", orgSourcedId=pl.col("orgSourcedIds").list.first())
    assert roles.equals(expected.sort("userSourcedId"))


@pytest.mark.parametrize("source", ["sample-1.1", "generated-1.1"])
def test_1_1_to_1_2_and_back_is_the_same_snapshot(snapshots, source, tmp_path) -> None:
    snap = snapshots[source]
    as_12 = ingest(package_bytes(snap.frames, "1.2"), tmp_path / "as12")
    unchanged(snap.frames, ingest(package_bytes(as_12.frames, "1.1"), tmp_path / "back").frames)


def test_1_1_administrators_become_district_or_site_administrators(snapshots, tmp_path) -> None:
    snap = snapshots["sample-1.1"]
    admin = pl.col("sourcedId") == "tch-0001-001"
    users = snap.frames["users"].with_columns(
        role=pl.when(admin).then(pl.lit("administrator")).otherwise("role"),
        orgSourcedIds=pl.when(admin).then(items("dst-0001", "sch-0001")).otherwise("orgSourcedIds"),
    )
    frames = {**snap.frames, "users": users}
    data = package_bytes(frames, "1.2")
    strictly_valid(data, tmp_path)
    as_12 = ingest(data, tmp_path / "as12")
    roles = as_12.frames["roles"].filter(pl.col("userSourcedId") == "tch-0001-001").sort("sourcedId")
    assert roles.select("sourcedId", "roleType", "role", "orgSourcedId").rows() == [
        ("tch-0001-001.role.1", "primary", "districtAdministrator", "dst-0001"),
        ("tch-0001-001.role.2", "secondary", "siteAdministrator", "sch-0001"),
    ]
    assert as_12.frames["users"].filter(pl.col("sourcedId") == "tch-0001-001")["primaryOrgSourcedId"][0] == "dst-0001"
    unchanged(frames, ingest(package_bytes(as_12.frames, "1.1"), tmp_path / "back").frames)


def test_1_2_roles_become_one_1_1_role_and_the_orgs(snapshots, tmp_path) -> None:
    snap = snapshots["sample-1.2"]
    roles, users = snap.frames["roles"], snap.frames["users"]
    extra = roles.filter(pl.col("userSourcedId") == "tch-0001-001").with_columns(
        sourcedId=pl.lit("a-extra"), roleType=pl.lit("secondary"), role=pl.lit("principal"),
        orgSourcedId=pl.lit("dst-0001"))  # fmt: skip
    counsel = roles.filter(pl.col("userSourcedId") == "tch-0002-001").with_columns(role=pl.lit("counselor"))
    roleless = "stu-0001-0002"  # keeps only an enrollment as a student
    roles = pl.concat([roles.filter(~pl.col("userSourcedId").is_in(["tch-0002-001", roleless])), extra, counsel])
    demographics = snap.frames["demographics"].with_columns(sex=pl.lit("unspecified"))
    frames = {**snap.frames, "roles": roles, "demographics": demographics}
    data = package_bytes(frames, "1.1")
    strictly_valid(data, tmp_path)
    back = ingest(data, tmp_path / "as11").frames["users"].sort("sourcedId")
    picked = back.filter(pl.col("sourcedId").is_in(["tch-0001-001", "tch-0002-001", roleless]))
    assert picked.select("sourcedId", "role", "orgSourcedIds").rows() == [
        ("stu-0001-0002", "student", ["sch-0001"]),
        ("tch-0001-001", "teacher", ["sch-0001", "dst-0001"]),
        ("tch-0002-001", "administrator", ["sch-0002"]),
    ]
    assert "unspecified" not in entries(data)["demographics.csv"]
    users = users.with_columns(primaryOrgSourcedId=pl.when(pl.col("sourcedId") == roleless).then(None)
                               .otherwise("primaryOrgSourcedId"))  # fmt: skip
    enrollments = frames["enrollments"].filter(pl.col("userSourcedId") != roleless)
    orphan = {**frames, "users": users, "enrollments": enrollments}
    with pytest.raises(ExportError, match="stu-0001-0002"):
        package_bytes(orphan, "1.1")


def test_1_2_tokens_that_1_1_lacks_in_a_required_column_are_refused(snapshots) -> None:
    snap = snapshots["sample-1.2"]
    orgs = snap.frames["orgs"].with_columns(type=pl.when(pl.col("type") == "district").then(pl.lit("ext:trust"))
                                            .otherwise("type"))  # fmt: skip
    frames = {**snap.frames, "orgs": orgs}
    assert "ext:trust" in entries(package_bytes(frames, "1.2"))["orgs.csv"]
    with pytest.raises(ExportError, match="orgs.csv: type 'ext:trust'"):
        package_bytes(frames, "1.1")


# --- deltas ---------------------------------------------------------------------------------------------


Days = tuple[Snapshot, Snapshot, Frames]


@pytest.fixture(scope="module")
def districts(tmp_path_factory) -> Callable[[str], Days]:
    """version -> day 1 and day 2 snapshots of a generated district with churn, and churn's own delta tables."""
    made: dict[str, Days] = {}

    def days(version: str) -> Days:
        if version not in made:
            root = tmp_path_factory.mktemp(f"days-{version}")
            day1 = generate(DistrictSpec(**SPEC, version=version))
            day2 = churn(day1, version, Churn(withdrawn=4, arrivals=3, new_emails=2, period_changes=2))
            write_zip(day1, root / "day1.zip", version)
            write_zip(day2.bulk, root / "day2.zip", version)
            first = ingest(root / "day1.zip", root / "day1")
            made[version] = first, ingest(root / "day2.zip", root / "day2", base=first.folder), day2.delta
        return made[version]

    return days


def change_set(old: Frames, new: Frames) -> tuple[Frames, Frames]:
    """What a target sends: per entity the added and updated rows, and the deleted rows."""
    changes = diff_snapshots(old, new)
    upserts = {e: pl.concat([c.added, c.updated.drop("changed")]) for e, c in changes.entities.items()}
    deleted = {e: c.deleted for e, c in changes.entities.items() if c.deleted.height}
    return {e: f for e, f in upserts.items() if f.height}, deleted


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize("form", ["ids", "rows", "generator"])
def test_a_delta_applied_to_day_1_gives_day_2(districts, version, form, tmp_path) -> None:
    first, second, churned = districts(version)
    upserts, deleted = change_set(first.frames, second.frames)
    gone = {e: f["sourcedId"] for e, f in deleted.items()} if form == "ids" else deleted
    if form == "generator":  # churn's own tables: all text, status in the frame
        upserts = {e: f.filter(pl.col("status") == "active") for e, f in churned.items()}
        gone = {e: f.filter(pl.col("status") == "tobedeleted")["sourcedId"].to_list() for e, f in churned.items()}
    data = package_bytes(upserts, first.version, mode="delta", deleted=gone, modified_at=WHEN)
    strictly_valid(data, tmp_path)
    files = entries(data)
    manifest = dict(read_csv(files.pop("manifest.csv")).iter_rows())
    assert {k[5:] for k, v in manifest.items() if v == "delta"} == {n[:-4] for n in files} == set(upserts) | set(gone)
    for text in files.values():
        frame = read_csv(text)
        assert set(frame["status"]) <= {"active", "tobedeleted"} and set(frame["dateLastModified"]) == {WHEN_TEXT}
    unchanged(second.frames, ingest(data, tmp_path / "applied", base=first.folder).frames)


def test_a_delta_converted_to_1_2_applies_to_the_converted_day_1(districts, tmp_path) -> None:
    first, second, _ = districts("1.1")
    base = ingest(package_bytes(first.frames, "1.2"), tmp_path / "day1-12")
    upserts, deleted = change_set(first.frames, second.frames)  # deleted users as rows: their roles go too
    data = package_bytes(upserts, "1.2", mode="delta", deleted=deleted, modified_at=WHEN)
    strictly_valid(data, tmp_path)
    applied = ingest(data, tmp_path / "applied", base=base.folder)
    unchanged(ingest(package_bytes(second.frames, "1.2"), tmp_path / "day2-12").frames, applied.frames)


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_any_row_of_any_file_can_be_deleted_by_sourced_id_alone(version, tmp_path) -> None:
    tables = schema.VERSIONS[version].tables
    deleted = {entity: [f"gone.{entity}"] for entity in tables}
    data = package_bytes({}, version, mode="delta", deleted=deleted, modified_at=WHEN)
    result = strictly_valid(data, tmp_path)
    assert set(result.roster.frames) == set(tables)
    assert all(set(f["status"]) == {"tobedeleted"} for f in result.roster.frames.values())


def test_delta_stamps_default_to_now_in_utc() -> None:
    frame = pl.DataFrame({"sourcedId": ["o1"], "name": ["A"], "type": ["school"]})
    before = datetime.now(UTC).replace(microsecond=0)
    tables = package_tables({"orgs": frame}, "1.2", mode="delta")
    stamp = datetime.fromisoformat(tables["orgs"]["dateLastModified"][0].replace("Z", "+00:00"))
    assert before <= stamp <= datetime.now(UTC)
    naive = package_tables({"orgs": frame}, "1.2", mode="delta", modified_at=datetime(2026, 1, 2, 3, 4, 5))
    assert naive["orgs"]["dateLastModified"][0] == "2026-01-02T03:04:05.000Z"


# --- refusals and files ---------------------------------------------------------------------------------


def test_what_csv_cannot_hold_is_refused(snapshots) -> None:
    frames = snapshots["sample-1.1"].frames
    users = frames["users"]
    with pytest.raises(ExportError, match="users.csv: givenName .* line break"):
        package_bytes({**frames, "users": users.with_columns(givenName=pl.lit("Anne\nMarie"))}, "1.1")
    with pytest.raises(ExportError, match="classes.csv: periods .* list item"):
        package_bytes({**frames, "classes": frames["classes"].with_columns(periods=items("1", "2,3"))}, "1.1")
    with pytest.raises(ExportError, match="more than one row"):
        package_bytes({"users": users}, "1.1", mode="delta", deleted={"users": users["sourcedId"].head(1)})
    with pytest.raises(ExportError, match="pupils"):
        package_bytes({"pupils": users}, "1.1")
    with pytest.raises(ValueError, match="only a delta"):
        package_bytes(frames, "1.1", deleted={"users": ["x"]})


def test_write_package_replaces_the_file_whole(snapshots, tmp_path) -> None:
    frames = snapshots["sample-1.2"].frames
    path = tmp_path / "out.zip"
    path.write_bytes(b"old")
    write_package(path, frames, "1.1")
    assert path.read_bytes() == package_bytes(frames, "1.1") and path.stat().st_mode & 0o777 == 0o600
    broken = {**frames, "orgs": frames["orgs"].with_columns(name=pl.lit("a\rb"))}
    with pytest.raises(ExportError):
        write_package(path, broken, "1.2", mode="bulk")
    assert path.read_bytes() == package_bytes(frames, "1.1")
    assert [p.name for p in tmp_path.iterdir()] == ["out.zip"]
