"""The district generator: deterministic, shaped like the schema, internally consistent, and the committed
sample packages are exactly what samples/make_samples.py writes."""

from __future__ import annotations

import importlib.util
import io
import re
import zipfile
from pathlib import Path

import polars as pl
import pytest

from daemon.generator import generate as gen
from daemon.oneroster import schema
from daemon.generator.generate import DistrictSpec

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SMALL = {"schools": 3, "students_per_school": 30, "teachers_per_school": 4, "enrollments_per_student": 5}
SOURCED_ID = re.compile(r"^[0-9A-Za-z._-]+$")
MODIFIED = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture(scope="module", params=["1.1", "1.2"])
def district(request) -> tuple[str, dict[str, pl.DataFrame]]:
    return request.param, gen.generate(DistrictSpec(**SMALL, version=request.param))


def ids(frame: pl.DataFrame, column: str = "sourcedId") -> set[str]:
    return set(frame[column].to_list())


def items(frame: pl.DataFrame, column: str) -> set[str]:
    """Every item of a comma-list column."""
    return set(frame[column].str.split(",").explode().to_list())


def read_package(data: bytes) -> tuple[str, dict[str, str], dict[str, pl.DataFrame]]:
    """A zip's version, manifest modes and tables (all strings, blanks as "")."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    manifest = dict(pl.read_csv(files.pop("manifest.csv"), infer_schema=False).iter_rows())
    tables = {
        name.removesuffix(".csv"): pl.read_csv(body, infer_schema=False).fill_null("") for name, body in files.items()
    }
    modes = {k.removeprefix("file."): v for k, v in manifest.items() if k.startswith("file.")}
    return manifest["oneroster.version"], modes, tables


def assert_consistent(tables: dict[str, pl.DataFrame], version: str) -> None:
    """Every reference resolves, every value is in its vocabulary, every sourcedId is well-formed and unique."""
    orgs, sessions = tables["orgs"], tables["academicSessions"]
    school_ids = ids(orgs.filter(pl.col("type") == "school"))
    classes, enrollments, users = tables["classes"], tables["enrollments"], tables["users"]

    assert ids(classes, "schoolSourcedId") <= school_ids
    assert ids(enrollments, "schoolSourcedId") <= school_ids
    assert ids(enrollments, "classSourcedId") <= ids(classes)
    assert ids(enrollments, "userSourcedId") <= ids(users)
    assert ids(classes, "courseSourcedId") <= ids(tables["courses"])
    assert items(classes, "termSourcedIds") <= ids(sessions.filter(pl.col("type") == "semester"))
    assert ids(tables["courses"], "orgSourcedId") <= ids(orgs)
    assert ids(tables["courses"], "schoolYearSourcedId") <= ids(sessions.filter(pl.col("type") == "schoolYear"))
    assert ids(orgs, "parentSourcedId") - {""} <= ids(orgs)
    assert ids(sessions, "parentSourcedId") - {""} <= ids(sessions)
    assert ids(tables["demographics"]) <= ids(users)
    # an enrollment's school is its class's school
    joined = enrollments.join(classes, left_on="classSourcedId", right_on="sourcedId", suffix="_class")
    assert joined.height == enrollments.height
    assert (joined["schoolSourcedId"] == joined["schoolSourcedId_class"]).all()
    if version == "1.1":
        assert items(users, "orgSourcedIds") <= ids(orgs)
    else:
        assert ids(tables["roles"], "userSourcedId") == ids(users)
        assert ids(tables["roles"], "orgSourcedId") <= school_ids
        assert ids(users, "primaryOrgSourcedId") <= school_ids

    for entity, frame in tables.items():
        table = schema.VERSIONS[version].tables[entity]
        assert frame["sourcedId"].n_unique() == frame.height, entity
        assert all(SOURCED_ID.match(v) for v in frame["sourcedId"]), entity
        for column in table.columns:
            values = set(frame[column.name].to_list()) - {""}
            if column.vocabulary:
                assert values <= set(column.vocabulary), (entity, column.name, values - set(column.vocabulary))
            if column.required:
                assert "" not in frame[column.name].to_list(), (entity, column.name)
            if column.kind is schema.Kind.DATE:
                assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", v) for v in values), (entity, column.name)
    assert items(users, "grades") - {""} <= set(schema.CEDS_GRADES)


# --- the bulk district ----------------------------------------------------------------------------------


def test_same_spec_same_bytes(tmp_path: Path) -> None:
    spec = DistrictSpec(**SMALL, version="1.2", seed=7)
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    gen.write_zip(gen.generate(spec), first, "1.2")
    gen.write_zip(gen.generate(spec), second, "1.2")
    assert first.read_bytes() == second.read_bytes()
    other = gen.generate(DistrictSpec(**SMALL, version="1.2", seed=8))
    assert not other["users"].equals(gen.generate(spec)["users"])


def test_columns_are_the_schemas_strings(district) -> None:
    version, tables = district
    expected = ["orgs", "academicSessions", "courses", "classes", "users", "enrollments", "demographics"]
    if version == "1.2":
        expected.insert(5, "roles")
    assert list(tables) == expected
    for entity, frame in tables.items():
        assert tuple(frame.columns) == schema.VERSIONS[version].tables[entity].names
        assert set(frame.dtypes) == {pl.String}
        assert frame.null_count().sum_horizontal().item() == 0


def test_counts(district) -> None:
    version, tables = district
    schools, students, teachers = SMALL["schools"], SMALL["students_per_school"], SMALL["teachers_per_school"]
    classes = schools * teachers * gen.PERIODS
    assert tables["orgs"].height == schools + 1
    assert tables["users"].height == schools * (students + teachers)
    assert tables["classes"].height == classes
    assert tables["enrollments"].height == schools * students * SMALL["enrollments_per_student"] + classes
    assert tables["demographics"].height == schools * students
    if version == "1.2":
        assert tables["roles"].height == tables["users"].height


def test_references_and_vocabularies_hold(district) -> None:
    version, tables = district
    assert_consistent(tables, version)


def test_bulk_rows_leave_status_and_date_blank(district) -> None:
    _, tables = district
    for frame in tables.values():
        assert set(frame["status"]) == {""} and set(frame["dateLastModified"]) == {""}


def test_enrollments_are_distinct_classes_with_one_primary_teacher(district) -> None:
    _, tables = district
    enrollments = tables["enrollments"]
    assert not enrollments.select("userSourcedId", "classSourcedId").is_duplicated().any()
    per_student = enrollments.filter(pl.col("role") == "student").group_by("userSourcedId").len()
    assert set(per_student["len"]) == {SMALL["enrollments_per_student"]}
    teachers = enrollments.filter(pl.col("role") == "teacher")
    assert set(teachers["primary"]) == {"true"}
    assert ids(teachers, "classSourcedId") == ids(tables["classes"]) and teachers.height == tables["classes"].height
    assert set(enrollments.filter(pl.col("role") == "student")["primary"]) == {"false"}


def test_an_enrollment_count_above_the_class_count_is_capped() -> None:
    tables = gen.generate(DistrictSpec(schools=1, students_per_school=4, teachers_per_school=1,
                                       enrollments_per_student=9))  # fmt: skip
    students = tables["enrollments"].filter(pl.col("role") == "student")
    assert students.height == 4 * gen.PERIODS
    assert not students.select("userSourcedId", "classSourcedId").is_duplicated().any()


def test_content_exercises_lists_and_quoting() -> None:
    tables = gen.generate(DistrictSpec(**SMALL))
    assert tables["classes"]["termSourcedIds"].str.contains(",").any()
    assert not tables["classes"]["termSourcedIds"].str.contains(",").all()
    students = tables["users"].filter(pl.col("role") == "student")
    assert students["identifier"].str.contains(r"^\d{10}$").all()
    assert students["userIds"].str.starts_with("{CA-SSID:").all()
    assert tables["orgs"].filter(pl.col("type") == "school")["identifier"].str.contains(r"^0\d{13}$").all()
    text = gen.to_csv_bytes(tables["users"]).decode()
    assert '"' in text and "\r" not in text


def test_1_2_users_leave_role_and_org_to_roles() -> None:
    tables = gen.generate(DistrictSpec(**SMALL, version="1.2"))
    assert "role" not in tables["users"].columns and "orgSourcedIds" not in tables["users"].columns
    roles = tables["roles"]
    assert set(roles["roleType"]) == {"primary"} and set(roles["role"]) == {"student", "teacher"}
    assert roles.select("userSourcedId", "orgSourcedId").n_unique() == roles.height


def test_spec_rejects_an_unknown_version() -> None:
    with pytest.raises(ValueError):
        DistrictSpec(version="1.0")


# --- day 2 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_delta_rows_all_carry_status_and_date(version: str) -> None:
    base = gen.generate(DistrictSpec(**SMALL, version=version))
    delta = gen.delta_tables(base, version, seed=3)
    expected = {"users", "enrollments", "demographics"} | ({"roles"} if version == "1.2" else set())
    assert set(delta) == expected
    for entity, frame in delta.items():
        assert frame.height > 0
        assert tuple(frame.columns) == schema.VERSIONS[version].tables[entity].names
        assert set(frame["status"]) <= {"active", "tobedeleted"}
        assert all(MODIFIED.match(v) for v in frame["dateLastModified"]), entity

    users = delta["users"]
    gone = ids(users.filter(pl.col("status") == "tobedeleted"))
    new = ids(users.filter(pl.col("status") == "active")) - ids(base["users"])
    assert len(gone) == 3 and len(new) == 3 and gone <= ids(base["users"])
    enrollments = delta["enrollments"]
    assert ids(enrollments.filter(pl.col("status") == "tobedeleted"), "userSourcedId") == gone
    assert len(enrollments.filter(pl.col("status") == "tobedeleted")) == 3 * SMALL["enrollments_per_student"]
    arriving = enrollments.filter(pl.col("status") == "active")
    assert ids(arriving, "userSourcedId") == new
    assert ids(arriving, "classSourcedId") <= ids(base["classes"])
    assert not ids(arriving) & ids(base["enrollments"])
    changed = users.filter(pl.col("sourcedId").str.starts_with("tch-"))
    before = base["users"].join(changed, on="sourcedId", suffix="_new")
    assert changed.height == 2 and (before["email"] != before["email_new"]).all()


# --- files and packages ---------------------------------------------------------------------------------


def test_csv_quotes_only_when_needed() -> None:
    frame = pl.DataFrame({"a": ["plain", "Smith, Jr.", 'Robert "Bobby"'], "b": ["", "x", ""]})
    assert gen.to_csv_bytes(frame) == b'a,b\nplain,\n"Smith, Jr.",x\n"Robert ""Bobby""",\n'


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_manifest_lists_every_file_of_the_version(version: str) -> None:
    rows = gen.manifest_bytes(version, {"users": "bulk", "orgs": "delta"}).decode().splitlines()
    assert rows[:3] == ["propertyName,value", "manifest.version,1.0", f"oneroster.version,{version}"]
    files = dict(row.split(",") for row in rows if row.startswith("file."))
    assert list(files) == [f"file.{entity}" for entity in schema.VERSIONS[version].tables]
    assert files["file.users"] == "bulk" and files["file.orgs"] == "delta" and files["file.classes"] == "absent"
    assert rows[-2:] == ["source.systemName,rosterd-generator", "source.systemCode,gen"]
    with pytest.raises(ValueError):
        gen.manifest_bytes(version, {"pupils": "bulk"})
    with pytest.raises(ValueError):
        gen.manifest_bytes(version, {"users": "full"})


def test_zip_holds_the_manifest_and_tables_at_its_root(tmp_path: Path) -> None:
    tables = gen.generate(DistrictSpec(**SMALL, version="1.2"))
    path = tmp_path / "p.zip"
    gen.write_zip(tables, path, "1.2")
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == ["manifest.csv", *(f"{e}.csv" for e in tables)]
    assert {i.date_time for i in infos} == {gen.ZIP_TIME}
    assert {i.compress_type for i in infos} == {zipfile.ZIP_DEFLATED}
    version, modes, read = read_package(path.read_bytes())
    assert version == "1.2" and {e for e, m in modes.items() if m == "bulk"} == set(tables)
    for entity, frame in tables.items():
        assert read[entity].equals(frame)


def test_cli_writes_a_delta(tmp_path: Path, capsys) -> None:
    out = tmp_path / "d.zip"
    argv = [str(out), "--schools", "2", "--students-per-school", "10", "--teachers-per-school", "2", "--delta"]
    assert gen.main(argv) == 0
    version, modes, tables = read_package(out.read_bytes())
    assert version == "1.1" and {e for e, m in modes.items() if m == "delta"} == set(tables) == {
        "users", "enrollments", "demographics"
    }  # fmt: skip
    assert "delta" in capsys.readouterr().out


# --- the committed samples ------------------------------------------------------------------------------


def load_make_samples():
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_samples_reproduces_the_committed_samples(tmp_path: Path) -> None:
    make_samples = load_make_samples()
    assert make_samples.main(["--out", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.glob("*.zip"))
    assert written == sorted(p.name for p in SAMPLES.glob("*.zip")) == sorted(make_samples.SAMPLES)
    for name in written:
        assert zip_content(tmp_path / name) == zip_content(SAMPLES / name), f"{name}: run make samples"


def zip_content(path: Path) -> object:
    """What a zip holds (entry names and bytes), so another zlib build's compressed bytes still compare equal.

    Files that are not readable zips (the deliberately broken samples) compare by whether they open at all,
    and a file that is no zip by its bytes.
    """
    data = path.read_bytes()
    if not data.startswith(b"PK"):
        return data
    try:
        with zipfile.ZipFile(path) as zf:
            return [(info.filename, zf.read(info)) for info in zf.infolist()]
    except (zipfile.BadZipFile, OSError, EOFError):
        return "unreadable zip"


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_valid_bulk_samples_are_consistent(version: str) -> None:
    found, modes, tables = read_package((SAMPLES / f"valid-{version}-bulk.zip").read_bytes())
    assert found == version and {e for e, m in modes.items() if m != "absent"} == set(tables)
    assert_consistent(tables, version)


def test_samples_stay_small() -> None:
    assert all(p.stat().st_size < 100_000 for p in SAMPLES.glob("*.zip"))


def test_broken_container_samples_are_broken_as_named() -> None:
    assert not zipfile.is_zipfile(SAMPLES / "broken-not-a-zip.zip")
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(SAMPLES / "broken-truncated.zip")
    with zipfile.ZipFile(SAMPLES / "broken-zip-bomb.zip") as archive:
        assert archive.getinfo("users.csv").file_size == 60 << 20
    with zipfile.ZipFile(SAMPLES / "broken-zip-slip.zip") as archive:
        assert "../../etc/evil.csv" in archive.namelist()


@pytest.mark.parametrize(
    "name",
    ["broken-reference-missing-class.zip", "broken-school-not-a-school.zip", "broken-invalid-enum.zip",
     "broken-duplicate-sourcedid.zip", "broken-us-dates.zip"],
)  # fmt: skip
def test_broken_content_samples_fail_the_consistency_check(name: str) -> None:
    version, _, tables = read_package((SAMPLES / name).read_bytes())
    with pytest.raises(AssertionError):
        assert_consistent(tables, version)
