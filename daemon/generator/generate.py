"""A deterministic generator of valid OneRoster districts: sample packages, test inputs, benchmark loads.

Every per-row value is a polars expression over integer ranges. Pseudo-random choices come from `_mix`, a
small integer hash written here rather than polars' own `hash`, whose output may change between polars
releases and would then change the committed samples. Same spec, same bytes.

    python -m daemon.generator.generate district.zip --schools 1000
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from daemon.oneroster import export, schema

# The package file helpers live in export.py (snapshots written back out use them too); re-exported here.
from daemon.oneroster.export import MODES, ZIP_TIME, to_csv_bytes, write_entries, zip_bytes  # noqa: F401

PERIODS = 6  # classes per teacher: one per period of the day
DISTRICT = "dst-0001"
DISTRICT_NAME = "Sample Unified School District"
CDS_PREFIX = "0161259"  # county and district digits of the 14-digit CDS-style org identifiers
YEAR = "ay-2027"
TERMS = ("sem-2027-1", "sem-2027-2")
GRADES = ("09", "10", "11", "12")
STUDENT_DOMAIN = "students.sample-usd.example"
STAFF_DOMAIN = "sample-usd.example"
DELTA_MODIFIED = "2026-11-20T08:30:00.000Z"
GENERATOR_SOURCE = ("rosterd-generator", "gen")  # the manifest's source.systemName and systemCode

# (id slug, course title, SCED subject, SCED code). The last DISTRICT_WIDE subjects are district courses.
SUBJECTS = (
    ("math", "Algebra I", "Mathematics", "02052"),
    ("ela", "English 9", "English Language and Literature", "01001"),
    ("sci", "Biology", "Life and Physical Sciences", "03051"),
    ("hist", "World History", "Social Sciences and History", "04051"),
    ("span", "Spanish I", "World Languages", "24052"),
    ("art", "Studio Art", "Fine and Performing Arts", "05154"),
    ("pe", "Physical Education", "Physical Health and Safety Education", "08001"),
    ("cs", "Computer Science Principles", "Computer and Information Sciences", "10019"),
)
DISTRICT_WIDE = 1

# Names chosen to exercise CSV quoting (commas, quotes, apostrophes) and UTF-8 (accents).
GIVEN_NAMES = (
    "Maria", "James", "Aiden", "Sofia", "Wei", "Olivia", "Mateo", "Priya", "Liam", "Zoë", "Noah", "Amara",
    "Ethan", "Chloé", "Diego", "Fatima", "Lucas", "Hana", "Kai", "Isabella", "Jamal", "Mei", 'Robert "Bobby"',
    "Ngozi", "Santiago", "Aroha", "Tomás", "Leilani",
)  # fmt: skip
FAMILY_NAMES = (
    "Garcia", "Nguyen", "Smith", "Johnson", "Martinez", "Kim", "Patel", "Okafor", "O'Brien", "Lopez", "Chen",
    "Brown", "Hernández", "Rossi", "Kowalski", "Yamamoto", "Müller", "Singh", "Davis", "Thompson, Jr.",
    "Wright, III", "Ali", "Fernández-López", "Begay",
)  # fmt: skip
PLACES = (
    "Oak Valley", "Riverside", "Cedar Creek", "Lincoln", "Bayview", "Sierra Vista", "Mission", "Harbor",
    "Granite Hills", "Willow Glen", "Sunset", "Pine Ridge",
)  # fmt: skip
CITIES = ("Sacramento", "Fresno", "Oakland", "San José", "Bakersfield", "Stockton", "Modesto", "Eureka")

# Salts keep the pseudo-random choices independent of each other.
_GIVEN, _FAMILY, _MIDDLE, _GRADE, _SCHEDULE, _TERM, _BIRTH, _SEX, _RACE, _ETHNIC, _CITY = range(1, 12)
_STAFF = 100  # added to the name salts for teachers
_WITHDRAW, _REASSIGN, _NEW_CLASSES = 201, 202, 203
_MASK = 1 << 32


@dataclass(frozen=True)
class DistrictSpec:
    schools: int = 3
    students_per_school: int = 450
    teachers_per_school: int = 25
    enrollments_per_student: int = 6
    version: str = "1.1"  # "1.1" or "1.2"
    seed: int = 1

    def __post_init__(self) -> None:
        if self.version not in schema.VERSIONS:
            raise ValueError(f"version must be one of {sorted(schema.VERSIONS)}, not {self.version!r}")
        if self.schools < 1:
            raise ValueError("a district needs at least one school")
        if not 0 <= self.students_per_school < 100_000 or not 0 <= self.teachers_per_school < 10_000:
            raise ValueError("students_per_school must be in 0..99999 and teachers_per_school in 0..9999")
        if self.enrollments_per_student < 0:
            raise ValueError("enrollments_per_student must not be negative")


# --- expression helpers -------------------------------------------------------------------------------


def _mix(key: pl.Expr, seed: int, salt: int) -> pl.Expr:
    """A pseudo-random integer in [0, 2**32) for each integer key; every product stays inside UInt64."""
    offset = (seed * 0x85EBCA77 + salt * 0xC2B2AE3D) % _MASK
    x = ((key.cast(pl.UInt64) % _MASK) * 0x9E3779B1 + offset) % _MASK
    for _ in range(2):
        x = (x.xor(x // 65536) * 0x045D9F3B) % _MASK
    return x.xor(x // 65536)


def _pick(values: Sequence[str], index: pl.Expr) -> pl.Expr:
    return pl.lit(pl.Series(values, dtype=pl.String)).gather(index % len(values))


def _pad(number: pl.Expr, width: int) -> pl.Expr:
    return number.cast(pl.String).str.zfill(width)


def _slug(name: pl.Expr) -> pl.Expr:
    """Letters only, accents folded to ASCII: for usernames and e-mail addresses."""
    return name.str.normalize("NFKD").str.to_lowercase().str.replace_all("[^a-z]", "")


def _rows(n: int, **columns: pl.Expr) -> pl.DataFrame:
    """A frame of n rows computed from `i` = 0..n-1 (int_range needs a frame to run in)."""
    return pl.select(i=pl.int_range(n, dtype=pl.Int64)).with_columns(**columns)


def _school_id(school: pl.Expr) -> pl.Expr:
    return pl.format("sch-{}", _pad(school, 4))


def _student_id(school: pl.Expr, student: pl.Expr) -> pl.Expr:
    return pl.format("stu-{}-{}", _pad(school, 4), _pad(student, 4))


def _teacher_id(school: pl.Expr, teacher: pl.Expr) -> pl.Expr:
    return pl.format("tch-{}-{}", _pad(school, 4), _pad(teacher, 3))


def _class_id(school: pl.Expr, teacher: pl.Expr, period: pl.Expr) -> pl.Expr:
    return pl.format("cls-{}-t{}-p{}", _pad(school, 4), _pad(teacher, 3), period)


def _finish(frame: pl.DataFrame, entity: str, version: str) -> pl.DataFrame:
    """The table's columns in the version's order, all strings; a column the frame lacks is blank."""
    present = set(frame.columns)
    return frame.select(
        (pl.col(name) if name in present else pl.lit("")).cast(pl.String).fill_null("").alias(name)
        for name in schema.VERSIONS[version].tables[entity].names
    )


# --- the district ---------------------------------------------------------------------------------------


def _orgs(spec: DistrictSpec) -> pl.DataFrame:
    school = pl.col("i") + 1
    place = _pick(PLACES, pl.col("i"))
    round_ = pl.col("i") // len(PLACES) + 1  # names repeat past the list, so later rounds get a number
    schools = _rows(
        spec.schools,
        sourcedId=_school_id(school),
        name=pl.when(round_ > 1)
        .then(pl.format("{} High School {}", place, round_))
        .otherwise(pl.format("{} High School", place)),
        type=pl.lit("school"),
        identifier=pl.format("{}{}", pl.lit(CDS_PREFIX), _pad(130_000 + school, 7)),
        parentSourcedId=pl.lit(DISTRICT),
    ).drop("i")
    district = pl.DataFrame(
        {"sourcedId": [DISTRICT], "name": [DISTRICT_NAME], "type": ["district"],
         "identifier": [CDS_PREFIX + "0000000"], "parentSourcedId": [""]}
    )  # fmt: skip
    return pl.concat([district, schools])


def _sessions() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "sourcedId": [YEAR, *TERMS],
            "title": ["2026-2027", "Fall 2026", "Spring 2027"],
            "type": ["schoolYear", "semester", "semester"],
            "startDate": ["2026-08-15", "2026-08-15", "2027-01-05"],
            "endDate": ["2027-06-12", "2026-12-19", "2027-06-12"],
            "parentSourcedId": ["", YEAR, YEAR],
            "schoolYear": ["2027", "2027", "2027"],
        }
    )


def _subject_columns(subject: pl.Expr, school: pl.Expr) -> dict[str, pl.Expr]:
    """Course id, title and SCED subject of subject number `subject` (0-based) as taught at `school`."""
    slug = _pick([s[0] for s in SUBJECTS], subject)
    district_wide = subject >= len(SUBJECTS) - DISTRICT_WIDE
    return {
        "courseSourcedId": pl.when(district_wide)
        .then(pl.format("crs-dst-{}", slug))
        .otherwise(pl.format("crs-{}-{}", _pad(school, 4), slug)),
        "courseTitle": _pick([s[1] for s in SUBJECTS], subject),
        "slug": slug,
        "subjects": _pick([s[2] for s in SUBJECTS], subject),
        "subjectCodes": _pick([s[3] for s in SUBJECTS], subject),
        "grades": pl.lit(",".join(GRADES)),
    }


def _courses(spec: DistrictSpec) -> pl.DataFrame:
    local = len(SUBJECTS) - DISTRICT_WIDE
    school = pl.col("i") // local + 1
    at_schools = _rows(spec.schools * local, **_subject_columns(pl.col("i") % local, school)).with_columns(
        orgSourcedId=_school_id(school)
    )
    district = _rows(DISTRICT_WIDE, **_subject_columns(pl.col("i") + local, pl.lit(0))).with_columns(
        orgSourcedId=pl.lit(DISTRICT)
    )
    return pl.concat([at_schools, district]).select(
        sourcedId="courseSourcedId",
        schoolYearSourcedId=pl.lit(YEAR),
        title="courseTitle",
        courseCode=pl.col("slug").str.to_uppercase(),
        grades="grades",
        orgSourcedId="orgSourcedId",
        subjects="subjects",
        subjectCodes="subjectCodes",
    )


def _classes(spec: DistrictSpec) -> pl.DataFrame:
    per_school = spec.teachers_per_school * PERIODS
    school = pl.col("i") // per_school + 1
    teacher = pl.col("i") % per_school // PERIODS + 1
    period = pl.col("i") % PERIODS + 1
    term = _mix(pl.col("i"), spec.seed, _TERM) % 4  # half the classes run all year, a quarter each semester
    frame = _rows(spec.schools * per_school, school=school, teacher=teacher, period=period)
    subject = (pl.col("school") + pl.col("teacher") - 2) % len(SUBJECTS)
    return frame.with_columns(**_subject_columns(subject, pl.col("school"))).select(
        sourcedId=_class_id(pl.col("school"), pl.col("teacher"), pl.col("period")),
        title=pl.format("{} - Period {}", pl.col("courseTitle"), pl.col("period")),
        grades="grades",
        courseSourcedId="courseSourcedId",
        classCode=pl.format("{}-{}-{}", pl.col("slug").str.to_uppercase(), _pad(pl.col("teacher"), 3), "period"),
        classType=pl.lit("scheduled"),
        location=pl.format("Room {}", 100 + pl.col("teacher")),
        schoolSourcedId=_school_id(pl.col("school")),
        termSourcedIds=pl.when(term < 2)
        .then(pl.lit(",".join(TERMS)))
        .otherwise(_pick(TERMS, term)),
        subjects="subjects",
        subjectCodes="subjectCodes",
        periods=pl.col("period").cast(pl.String),
        teacher=_teacher_id(pl.col("school"), pl.col("teacher")),
    )


def _names(key: pl.Expr, seed: int, salt: int) -> dict[str, pl.Expr]:
    return {
        "givenName": _pick(GIVEN_NAMES, _mix(key, seed, _GIVEN + salt)),
        "familyName": _pick(FAMILY_NAMES, _mix(key, seed, _FAMILY + salt)),
    }


def _students(keys: pl.DataFrame, seed: int) -> pl.DataFrame:
    """People rows for students; `keys` holds integer columns `school` and `student`, both counted from 1."""
    key = pl.col("school") * 100_000 + pl.col("student")
    middle = _mix(key, seed, _MIDDLE)
    frame = keys.with_columns(key=key, **_names(key, seed, 0)).with_columns(
        grade=9 + _mix(pl.col("key"), seed, _GRADE) % 4,
        local=pl.format("{}.{}{}", _slug(pl.col("givenName")), _slug(pl.col("familyName")), pl.col("key")),
        # a bijection onto 10-digit numbers: unique state ids that do not look sequential
        ssid=(1_000_000_000 + pl.col("key") * 2_654_435_761 % 9_000_000_000).cast(pl.String),
    )
    return frame.select(
        "key",
        "grade",
        sourcedId=_student_id(pl.col("school"), pl.col("student")),
        school=_school_id(pl.col("school")),
        role=pl.lit("student"),
        username="local",
        userIds=pl.concat_str(pl.lit("{CA-SSID:"), "ssid", pl.lit("},{LDAP:"), "local", pl.lit("}")),
        givenName="givenName",
        familyName="familyName",
        middleName=pl.when(middle % 3 == 0).then(_pick(GIVEN_NAMES, middle // 3)).otherwise(pl.lit("")),
        identifier="ssid",
        email=pl.format("{}@{}", pl.col("local"), pl.lit(STUDENT_DOMAIN)),
        grades=_pad(pl.col("grade"), 2),
    )


def _teachers(spec: DistrictSpec) -> pl.DataFrame:
    school = pl.col("i") // max(spec.teachers_per_school, 1) + 1
    teacher = pl.col("i") % max(spec.teachers_per_school, 1) + 1
    key = school * 10_000 + teacher
    frame = _rows(spec.schools * spec.teachers_per_school, school=school, teacher=teacher, key=key)
    frame = frame.with_columns(**_names(pl.col("key"), spec.seed, _STAFF))
    local = pl.format("{}{}{}", _slug(pl.col("givenName")).str.head(1), _slug(pl.col("familyName")), "key")
    return frame.select(
        sourcedId=_teacher_id(pl.col("school"), pl.col("teacher")),
        school=_school_id(pl.col("school")),
        role=pl.lit("teacher"),
        username=local,
        userIds=pl.concat_str(pl.lit("{LDAP:"), local, pl.lit("}")),
        givenName="givenName",
        familyName="familyName",
        identifier=pl.format("E{}", _pad(pl.col("key"), 8)),
        email=pl.format("{}@{}", local, pl.lit(STAFF_DOMAIN)),
    )


def _users(people: pl.DataFrame, version: str) -> pl.DataFrame:
    if version == "1.1":
        frame = people.with_columns(enabledUser=pl.lit("true"), orgSourcedIds="school")
    else:
        frame = people.with_columns(enabledUser=pl.lit("true"), primaryOrgSourcedId="school")
    return _finish(frame, "users", version)


def _roles(people: pl.DataFrame) -> pl.DataFrame:
    frame = people.select(
        sourcedId=pl.format("rol-{}", pl.col("sourcedId")),
        userSourcedId="sourcedId",
        roleType=pl.lit("primary"),
        role="role",
        orgSourcedId="school",
    )
    return _finish(frame, "roles", "1.2")


def _student_enrollments(spec: DistrictSpec) -> pl.DataFrame:
    """Each student in `enrollments_per_student` distinct classes of their school.

    Student s takes classes (start + k*stride) mod C for k < per, where start is pseudo-random: distinct
    classes, and with C a multiple of PERIODS and stride = C // per, mostly distinct periods too.
    """
    classes = spec.teachers_per_school * PERIODS
    per = min(spec.enrollments_per_student, classes)
    students = spec.schools * spec.students_per_school
    stride = classes // per if per else 0
    frame = _rows(students * per, s=pl.col("i") // max(per, 1), k=pl.col("i") % max(per, 1)).with_columns(
        school=pl.col("s") // max(spec.students_per_school, 1) + 1,
        student=pl.col("s") % max(spec.students_per_school, 1) + 1,
    )
    start = _mix(pl.col("school") * 100_000 + pl.col("student"), spec.seed, _SCHEDULE).cast(pl.Int64)
    frame = frame.with_columns(c=(start + pl.col("k") * stride) % max(classes, 1))
    return frame.select(
        sourcedId=pl.format("enr-{}-{}-{}", _pad(pl.col("school"), 4), _pad(pl.col("student"), 4), pl.col("k") + 1),
        classSourcedId=_class_id(pl.col("school"), pl.col("c") // PERIODS + 1, pl.col("c") % PERIODS + 1),
        schoolSourcedId=_school_id(pl.col("school")),
        userSourcedId=_student_id(pl.col("school"), pl.col("student")),
        role=pl.lit("student"),
        primary=pl.lit("false"),
    )


def _teacher_enrollments(classes: pl.DataFrame) -> pl.DataFrame:
    return classes.select(
        sourcedId=pl.col("sourcedId").str.replace("^cls-", "enr-"),
        classSourcedId="sourcedId",
        schoolSourcedId="schoolSourcedId",
        userSourcedId="teacher",
        role=pl.lit("teacher"),
        primary=pl.lit("true"),
    )


def _demographics(students: pl.DataFrame, version: str, seed: int) -> pl.DataFrame:
    key = pl.col("key")
    race = _mix(key, seed, _RACE) % 6  # five single races, or two or more
    born_us = _mix(key, seed, _CITY) % 10 < 8
    # The same student has the same sex in both versions; 1.2 records one in five as `unspecified` (a value
    # 1.1 lacks) where 1.1 says male or female, so a 1.2 export of a 1.1 district differs only there.
    drawn = _mix(key, seed, _SEX)
    sex = _pick(("male", "female"), drawn)
    if version != "1.1":
        sex = pl.when((drawn // 2) % 5 == 0).then(pl.lit("unspecified")).otherwise(sex)
    flags = {
        flag: pl.when(race == n).then(pl.lit("true")).otherwise(pl.lit("false"))
        for n, flag in enumerate(schema.RACE_FLAGS[:6])
    }
    frame = students.select(
        "sourcedId",
        # a student in grade g was born between 2 September of 2020-g and 1 September of 2021-g
        birthDate=(pl.date(2020 - pl.col("grade"), 9, 2) + pl.duration(days=_mix(key, seed, _BIRTH) % 365))
        .dt.strftime("%Y-%m-%d"),
        sex=sex,
        **flags,
        hispanicOrLatinoEthnicity=pl.when(_mix(key, seed, _ETHNIC) % 3 == 0).then(pl.lit("true")).otherwise(
            pl.lit("false")
        ),
        countryOfBirthCode=pl.when(born_us).then(pl.lit("US")).otherwise(pl.lit("MX")),
        stateOfBirthAbbreviation=pl.when(born_us).then(pl.lit("CA")).otherwise(pl.lit("")),
        cityOfBirth=pl.when(born_us).then(_pick(CITIES, _mix(key, seed, _CITY) // 10)).otherwise(pl.lit("")),
    )
    return _finish(frame, "demographics", version)


def generate(spec: DistrictSpec) -> dict[str, pl.DataFrame]:
    """A valid bulk district keyed by entity, all columns strings ("" for blank), tables in dependency order.

    A table left without rows by a degenerate spec (no teachers, say) is left out: OneRoster forbids
    header-only files."""
    v = spec.version
    keys = _rows(
        spec.schools * spec.students_per_school,
        school=pl.col("i") // max(spec.students_per_school, 1) + 1,
        student=pl.col("i") % max(spec.students_per_school, 1) + 1,
    )
    students = _students(keys, spec.seed)
    people = pl.concat([students.drop("key", "grade"), _teachers(spec)], how="diagonal")
    classes = _classes(spec)
    enrollments = pl.concat([_student_enrollments(spec), _teacher_enrollments(classes)])
    tables = {
        "orgs": _finish(_orgs(spec), "orgs", v),
        "academicSessions": _finish(_sessions(), "academicSessions", v),
        "courses": _finish(_courses(spec), "courses", v),
        "classes": _finish(classes, "classes", v),
        "users": _users(people, v),
        "roles": _roles(people) if v == "1.2" else None,
        "enrollments": _finish(enrollments, "enrollments", v),
        "demographics": _demographics(students, v, spec.seed),
    }
    return {entity: frame for entity, frame in tables.items() if frame is not None and frame.height}


# --- day 2: a delta ------------------------------------------------------------------------------------


def _sample(frame: pl.DataFrame, n: int, seed: int, salt: int) -> pl.DataFrame:
    """n rows chosen pseudo-randomly but reproducibly, in their original order."""
    chosen = frame.with_row_index("_i").with_columns(_h=_mix(pl.col("_i"), seed, salt)).sort("_h", "_i")
    return chosen.head(n).sort("_i").drop("_i", "_h")


def _stamp(frame: pl.DataFrame, status: str) -> pl.DataFrame:
    return frame.with_columns(status=pl.lit(status), dateLastModified=pl.lit(DELTA_MODIFIED))


def _new_students(students: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    """n new students at the first school, numbered after its last student."""
    numbers = students.select(
        school=pl.col("sourcedId").str.extract(r"^stu-(\d+)-", 1).cast(pl.Int64),
        student=pl.col("sourcedId").str.extract(r"-(\d+)$", 1).cast(pl.Int64),
    )
    school = numbers["school"].min() if numbers.height else 1
    last = numbers.filter(pl.col("school") == school)["student"].max() or 0
    keys = pl.DataFrame({"school": [school] * n, "student": list(range(last + 1, last + n + 1))})
    return _students(keys, seed)


def _new_enrollments(people: pl.DataFrame, base: Mapping[str, pl.DataFrame], seed: int) -> pl.DataFrame:
    """Enroll new students in as many distinct classes of their school as the base's students take."""
    enrollments = base["enrollments"].filter(pl.col("role") == "student")
    per = round(enrollments.height / max(enrollments["userSourcedId"].n_unique(), 1))
    classes = base["classes"].select(classSourcedId="sourcedId", school="schoolSourcedId").with_row_index("_c")
    picks = people.select("sourcedId", "school", "key").join(classes, on="school").with_columns(
        _h=_mix(_mix(pl.col("key"), seed, _NEW_CLASSES) + pl.col("_c"), seed, _NEW_CLASSES)
    )
    picks = picks.sort("sourcedId", "_h", "_c").with_columns(k=pl.int_range(pl.len()).over("sourcedId") + 1)
    return picks.filter(pl.col("k") <= per).select(
        sourcedId=pl.format("enr-{}-{}", pl.col("sourcedId").str.strip_prefix("stu-"), pl.col("k")),
        classSourcedId="classSourcedId",
        schoolSourcedId="school",
        userSourcedId="sourcedId",
        role=pl.lit("student"),
        primary=pl.lit("false"),
    )


def delta_tables(
    base: Mapping[str, pl.DataFrame], version: str, seed: int = 1, *, withdrawn: int = 3, arrivals: int = 3,
    new_emails: int = 2,
) -> dict[str, pl.DataFrame]:  # fmt: skip
    """A day-2 delta against a generated district: some students leave, some arrive, some teachers get a new
    e-mail address. Every row carries status and dateLastModified; only files with rows are included."""
    users = base["users"]
    leaving = _sample(users.filter(pl.col("sourcedId").str.starts_with("stu-")), withdrawn, seed, _WITHDRAW)
    gone = pl.col("sourcedId").is_in(leaving["sourcedId"].implode())
    gone_user = pl.col("userSourcedId").is_in(leaving["sourcedId"].implode())
    readdressed = _sample(users.filter(pl.col("sourcedId").str.starts_with("tch-")), new_emails, seed, _REASSIGN)
    readdressed = readdressed.with_columns(email=pl.col("email").str.replace("@", "@staff.", literal=True))
    people = _new_students(users.filter(pl.col("sourcedId").str.starts_with("stu-")), arrivals, seed)

    parts: dict[str, list[pl.DataFrame]] = {
        "users": [_stamp(leaving, "tobedeleted"), _stamp(_users(people, version), "active"),
                  _stamp(readdressed, "active")],
        "enrollments": [_stamp(base["enrollments"].filter(gone_user), "tobedeleted"),
                        _stamp(_new_enrollments(people, base, seed), "active")],
    }  # fmt: skip
    if "demographics" in base:
        parts["demographics"] = [
            _stamp(base["demographics"].filter(gone), "tobedeleted"),
            _stamp(_demographics(people, version, seed), "active"),
        ]
    if version != "1.1" and "roles" in base:
        parts["roles"] = [_stamp(base["roles"].filter(gone_user), "tobedeleted"), _stamp(_roles(people), "active")]
    delta = {}
    for entity, frames in parts.items():
        frame = pl.concat([_finish(f, entity, version) for f in frames])
        if frame.height:
            delta[entity] = frame
    return delta


# --- packages -------------------------------------------------------------------------------------------


def manifest_bytes(version: str, modes: Mapping[str, str]) -> bytes:
    """manifest.csv naming every data file of the version: its mode from `modes`, otherwise absent."""
    return export.manifest_bytes(version, modes, source=GENERATOR_SOURCE)


def _entries(tables: Mapping[str, pl.DataFrame], version: str, mode: str) -> Iterator[tuple[str, bytes]]:
    yield schema.MANIFEST_FILE, manifest_bytes(version, {entity: mode for entity in tables})
    for entity, frame in tables.items():
        yield f"{entity}.csv", to_csv_bytes(frame)


def package_entries(tables: Mapping[str, pl.DataFrame], version: str, mode: str = "bulk") -> dict[str, bytes]:
    """The files of a package by name: manifest.csv first, then one CSV per table."""
    return dict(_entries(tables, version, mode))


def write_zip(tables: Mapping[str, pl.DataFrame], path: str | Path, version: str, mode: str = "bulk") -> None:
    """Write a package: manifest.csv plus one CSV per table at the zip root, every file in `mode`."""
    write_entries(path, _entries(tables, version, mode))


# --- command line ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    defaults = DistrictSpec()
    parser = argparse.ArgumentParser(
        prog="python -m daemon.generator.generate",
        description="Write a valid OneRoster CSV package (zip) for a made-up district. The output depends only "
        "on the options: the same options always give the same bytes.",
    )
    parser.add_argument("out", type=Path, help="the zip file to write")
    parser.add_argument("--schools", type=int, default=defaults.schools, help="high schools (default %(default)s)")
    parser.add_argument(
        "--students-per-school", type=int, default=defaults.students_per_school, help="students per school (default %(default)s)"
    )
    parser.add_argument(
        "--teachers-per-school", type=int, default=defaults.teachers_per_school,
        help=f"teachers per school, each teaching {PERIODS} classes (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--enrollments-per-student", type=int, default=defaults.enrollments_per_student,
        help="distinct classes per student (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--version", choices=sorted(schema.VERSIONS), default=defaults.version, help="OneRoster version (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="varies names and schedules (default %(default)s)")
    parser.add_argument(
        "--delta", action="store_true",
        help="write a day-2 delta against this district (withdrawals, new students, changed e-mails) instead",
    )  # fmt: skip
    args = parser.parse_args(argv)
    spec = DistrictSpec(
        args.schools, args.students_per_school, args.teachers_per_school, args.enrollments_per_student,
        args.version, args.seed,
    )  # fmt: skip
    started = time.perf_counter()
    tables = generate(spec)
    mode = "bulk"
    if args.delta:
        tables, mode = delta_tables(tables, spec.version, spec.seed), "delta"
    write_zip(tables, args.out, spec.version, mode)
    counts = ", ".join(f"{entity} {frame.height}" for entity, frame in tables.items())
    print(f"{args.out}: OneRoster {spec.version} {mode}: {counts} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
