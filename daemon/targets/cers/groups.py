"""CERS student groups from a roster snapshot: one group per class, the groups that changed between two
snapshots, and the CSV files that carry them.

A group is keyed, as in CERS, by (school_natural_id, group_name, school_year); CERS replaces every group a
file names and leaves the others alone, so a group that vanishes from the roster is sent with its key only,
which empties it. Choices made here (the brief left them open):

* A class with teachers but no students is still a group (its teachers see it empty). A class with neither
  is not sent: it would only add an invisible group (and if it had members before, the diff empties it).
* Group names are compared case-insensitively within a school and year, as CERS orders and matches them.
* Accented letters are folded to ASCII by Unicode NFKD decomposition (é -> e); what does not decompose to
  ASCII (ß, CJK) is dropped.
* The collision suffix is a hash of the class sourcedId computed with polars expressions only (polars' own
  `hash` may change between releases, and a renamed group would become a new group in CERS).
* An oversize class is split into balanced parts (201 students: 101 + 100), every part with all teachers.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping

import polars as pl

from daemon.oneroster.findings import Finding, Severity
from daemon.targets.cers.settings import MAX_STUDENTS_PER_GROUP, CersFilters, CersMapping

HEADER = ("group_name", "school_natural_id", "school_year", "subject_code", "student_ssid", "group_user_login")
KEY = ("school_natural_id", "group_name", "school_year")
COLUMNS = (*KEY, "subject_code", "teachers", "students", "class_sourced_id")
NAME_LIMIT = 100  # CERS: at most 100 of A-Z, a-z, 0-9, "_" and "-"
HASH_DIGITS = 6
EXAMPLES = 3  # sourcedIds named in an aggregated finding's message
_M32 = 1 << 32
_NAMES = pl.List(pl.String)
_EMPTY = pl.lit([], dtype=_NAMES)


# --- names -----------------------------------------------------------------------------------------------


def _scramble(x: pl.Expr) -> pl.Expr:
    """A 32-bit xor-shift-multiply finalizer: every input bit reaches every output bit."""
    x = x.cast(pl.UInt64) % _M32
    x = (x.xor(x // (1 << 16)) * 0x7FEB352D) % _M32
    x = (x.xor(x // (1 << 15)) * 0x846CA68B) % _M32
    return x.xor(x // (1 << 16))


def stable_hex(texts: pl.Series) -> pl.Series:
    """HASH_DIGITS lowercase hex digits per text, from a hash that depends only on its UTF-8 bytes.

    Tabulation style: each hex digit of the bytes is scrambled together with its position, and the sum is
    scrambled again. Exploded rather than list.eval'd: a position inside list.eval is computed list by list."""
    rows = texts.cast(pl.String).to_frame("text").with_row_index("row")
    nibbles = (
        rows.select("row", nibble=pl.col("text").fill_null("").str.encode("hex").str.split(""))
        .explode("nibble").filter(pl.col("nibble").str.len_chars() > 0)
        .with_columns(position=pl.int_range(pl.len(), dtype=pl.UInt64).over("row"))
        .group_by("row").agg(total=_scramble(pl.col("position") * 16 + pl.col("nibble").str.to_integer(base=16)).sum())
    )  # fmt: skip
    value = _scramble(pl.col("total").fill_null(0).cast(pl.UInt64) % _M32)
    digits = [(value // 16**k % 16).replace_strict(list(range(16)), list("0123456789abcdef"), return_dtype=pl.String)
              for k in reversed(range(HASH_DIGITS))]  # fmt: skip
    return rows.join(nibbles, on="row", how="left").sort("row").select(hex=pl.concat_str(digits))["hex"]


def clean_name(raw: pl.Expr) -> pl.Expr:
    """CERS's name rule without the length cut: accents folded, whitespace to "_", anything else dropped."""
    return raw.str.normalize("NFKD").str.replace_all(r"\s", "_").str.replace_all(r"[^A-Za-z0-9_-]", "")


def base_name(raw: pl.Expr, sourced_id: pl.Expr) -> pl.Expr:
    """The cleaned name; if it keeps no letter or digit, the cleaned sourcedId; if that keeps none either,
    null (unique_names then names it class_<hash>)."""
    cleaned, cleaned_id = clean_name(raw), clean_name(sourced_id)
    return pl.when(cleaned.str.contains("[A-Za-z0-9]")).then(cleaned).when(
        cleaned_id.str.contains("[A-Za-z0-9]")).then(cleaned_id)  # fmt: skip


def unique_names(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Final group names, and the classes whose names collided.

    `frame` holds school_natural_id, school_year, class_sourced_id, base (a cleaned name, any length, not
    empty) and part ("" or a split suffix "_N"). The name is base cut to fit + part; when two classes share
    a name in one school and year (ignoring case), each of them gets "_" + a hash of its sourcedId before
    the part. A hash may itself collide: those classes are hashed again with a salt, until all differ."""
    scope = ["school_natural_id", "school_year"]
    if frame["base"].null_count():  # nothing of the name or the sourcedId survived cleaning
        fallback = "class_" + stable_hex(frame["class_sourced_id"])
        frame = frame.with_columns(base=pl.coalesce("base", pl.lit(fallback)))
    frame = frame.with_columns(salt=pl.lit(0, dtype=pl.Int32), suffix=pl.lit(""))
    collided = frame.clear()
    for round_ in range(32):
        room = NAME_LIMIT - pl.col("part").str.len_chars() - pl.col("suffix").str.len_chars()
        frame = frame.with_columns(group_name=pl.concat_str(pl.col("base").str.head(room), "suffix", "part"))
        # two steps: a window nested in another is evaluated per outer group
        frame = frame.with_columns(clash=pl.len().over(*scope, pl.col("group_name").str.to_lowercase()) > 1)
        frame = frame.with_columns(clash=pl.col("clash").any().over("class_sourced_id"))
        if round_ == 0:
            collided = frame.filter("clash")
        if not frame["clash"].any():
            return frame.drop("salt", "suffix", "clash"), collided
        frame = frame.with_columns(salt=pl.col("salt") + pl.col("clash").cast(pl.Int32))
        salted = frame.filter("clash").select("class_sourced_id", "salt").unique()
        hashed = pl.when(pl.col("salt") == 1).then("class_sourced_id").otherwise(
            pl.format("{}#{}", "class_sourced_id", "salt"))  # fmt: skip
        salted = salted.with_columns(new=pl.lit("_") + pl.lit(stable_hex(salted.select(hashed).to_series())))
        frame = frame.join(salted.select("class_sourced_id", "new"), on="class_sourced_id", how="left")
        frame = frame.with_columns(suffix=pl.coalesce("new", "suffix")).drop("new")
    raise RuntimeError("group names still collide after 32 rounds of hashing")  # 2**-700 odds, or a bug


def _template(template: str, schema: pl.Schema) -> tuple[pl.Expr, pl.Expr]:
    """The rendered template, and whether every column it names is empty. A list column is joined with
    "-"; a column the classes lack renders empty."""
    pieces, fields = [], []
    for i, text in enumerate(re.split(r"\{([A-Za-z.]+)\}", template)):
        if i % 2 == 0:
            pieces.append(pl.lit(text))
            continue
        if text not in schema:
            value = pl.lit("")
        elif isinstance(schema[text], pl.List):
            value = pl.col(text).list.join("-").fill_null("")
        else:
            value = pl.col(text).cast(pl.String).fill_null("")
        pieces.append(value)
        fields.append(value)
    return pl.concat_str(pieces), pl.concat_str(fields).str.len_chars() == 0


# --- the roster ------------------------------------------------------------------------------------------


def _active(frame: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    frame = frame.lazy()
    if "status" not in frame.collect_schema():
        return frame
    return frame.filter(pl.col("status").is_null() | (pl.col("status") == "active"))


def _value(source: str, schema: pl.Schema) -> pl.Expr:
    """A users/orgs column named by the mapping, stripped, empty as null: `column`, `metadata.x` or
    `userIds:<type>` (the value of the first {type:value} entry of that type)."""
    if source.startswith("userIds:"):
        prefix = "{" + source.removeprefix("userIds:").lower() + ":"
        value = (
            pl.col("userIds").list.eval(
                pl.element().filter(pl.element().str.strip_chars().str.to_lowercase().str.starts_with(prefix))
                .str.strip_chars().str.slice(len(prefix)).str.strip_suffix("}")
            ).list.first()
            if "userIds" in schema else pl.lit(None, pl.String)
        )  # fmt: skip
    else:
        value = pl.col(source).cast(pl.String) if source in schema else pl.lit(None, pl.String)
    value = value.str.strip_chars()
    return pl.when(value.str.len_chars() > 0).then(value)


def _lists(frame: pl.LazyFrame, *names: str) -> list[pl.Expr]:
    schema = frame.collect_schema()
    return [(pl.col(n) if n in schema else pl.lit(None, _NAMES)).fill_null(_EMPTY).alias(n) for n in names]


def _subject(mapping: CersMapping) -> pl.Expr:
    """The CERS subject: the first of class titles, class codes, course titles, course codes that maps to
    something; exactly one subject is used, none or several give the default."""
    titles = {title.strip().lower(): code for title, code in mapping.subjects.items()}
    by_prefix = sorted(mapping.subject_codes.items(), key=lambda item: -len(item[0]))  # longest prefix wins

    def from_titles(column: str) -> pl.Expr:
        looked_up = pl.element().str.strip_chars().str.to_lowercase().replace_strict(
            titles, default=None, return_dtype=pl.String
        )
        return pl.col(column).list.eval(looked_up).list.drop_nulls().list.unique()

    def from_codes(column: str) -> pl.Expr:
        chain = pl.lit(None, pl.String)
        for prefix, code in reversed(by_prefix):
            chain = pl.when(pl.element().str.strip_chars().str.starts_with(prefix)).then(pl.lit(code)).otherwise(chain)
        return pl.col(column).list.eval(chain).list.drop_nulls().list.unique()

    sources = [from_titles("subjects"), from_codes("subjectCodes"),
               from_titles("course_subjects"), from_codes("course_subjectCodes")]  # fmt: skip
    first = pl.coalesce([pl.when(s.list.len() > 0).then(s) for s in sources])
    return pl.when(first.list.len() == 1).then(first.list.first()).otherwise(pl.lit(mapping.default_subject))


def _any_in(column: pl.Expr, values: list[str]) -> pl.Expr:
    return column.list.eval(pl.element().is_in(values)).list.any().fill_null(False)


def _course_in(ids: list[str]) -> pl.Expr:
    return (pl.col("courseSourcedId").is_in(ids) | pl.col("courseCode").is_in(ids)).fill_null(False)


def _kept_by(filters: CersFilters) -> pl.Expr:
    """Whether a class passes the filters (columns as _classes builds them)."""
    keep = [pl.lit(True)]
    if filters.class_types:
        keep.append(pl.col("classType").is_in(filters.class_types).fill_null(False))
    if filters.grades:
        grades = pl.when(pl.col("grades").list.len() > 0).then("grades").otherwise("course_grades")
        keep.append(_any_in(grades, filters.grades))
    if filters.include_courses:
        keep.append(_course_in(filters.include_courses))
    if filters.exclude_courses:
        keep.append(~_course_in(filters.exclude_courses))
    tokens = pl.concat_list("subject_code", "subjects", "subjectCodes", "course_subjects", "course_subjectCodes")
    tokens = tokens.list.eval(pl.element().str.strip_chars().str.to_lowercase())
    if filters.include_subjects:
        keep.append(_any_in(tokens, [s.strip().lower() for s in filters.include_subjects]))
    if filters.exclude_subjects:
        keep.append(~_any_in(tokens, [s.strip().lower() for s in filters.exclude_subjects]))
    if filters.schools:
        ids = filters.schools
        keep.append((pl.col("school").is_in(ids) | pl.col("school_identifier").is_in(ids)
                     | pl.col("school_natural_id").is_in(ids)).fill_null(False))  # fmt: skip
    return pl.all_horizontal(keep)


def _classes(frames: Mapping[str, pl.LazyFrame | pl.DataFrame], mapping: CersMapping) -> pl.LazyFrame:
    """Active classes with their school, school year, course and CERS subject, and the name template."""
    classes = _active(frames["classes"])
    schema = classes.collect_schema()
    name, fields_empty = _template(mapping.group_name, schema)
    orgs = _active(frames["orgs"])
    orgs_schema = orgs.collect_schema()
    schools = orgs.select(
        school="sourcedId",
        school_natural_id=_value(mapping.school_id, orgs_schema),
        school_identifier=pl.col("identifier") if "identifier" in orgs_schema else pl.lit(None, pl.String),
    )
    courses = _active(frames["courses"]) if "courses" in frames else pl.LazyFrame(schema={"sourcedId": pl.String})
    courses = courses.select("sourcedId", *_lists(courses, "subjects", "subjectCodes", "grades"),
                             courseCode=pl.col("courseCode") if "courseCode" in courses.collect_schema()
                             else pl.lit(None, pl.String))  # fmt: skip
    courses = courses.rename({c: f"course_{c}" for c in ("subjects", "subjectCodes", "grades")})
    sessions = _active(frames["academicSessions"]).select("sourcedId", "schoolYear")
    years = (
        classes.select("sourcedId", term=pl.col("termSourcedIds")).explode("term")
        .join(sessions, left_on="term", right_on="sourcedId").group_by("sourcedId")
        .agg(school_year=pl.col("schoolYear").max().cast(pl.Int32))
    )  # fmt: skip
    frame = classes.select(
        "sourcedId", "courseSourcedId", *_lists(classes, "grades", "subjects", "subjectCodes"),
        classType=pl.col("classType") if "classType" in schema else pl.lit(None, pl.String),
        school=pl.col("schoolSourcedId"),
        raw_name=pl.when(fields_empty).then(pl.col("sourcedId")).otherwise(name),
    )  # fmt: skip
    frame = (
        frame.join(schools, on="school", how="left")
        .join(courses, left_on="courseSourcedId", right_on="sourcedId", how="left")
        .join(years, on="sourcedId", how="left")
    )
    frame = frame.with_columns(*[pl.col(c).fill_null(_EMPTY) for c in ("course_subjects", "course_subjectCodes",
                                                                        "course_grades")])  # fmt: skip
    return frame.with_columns(subject_code=_subject(mapping))


def _members(frames, mapping: CersMapping, classes: pl.DataFrame) -> pl.DataFrame:
    """Teacher and student enrollments of `classes` with the id CERS knows them by (null when missing)."""
    users = _active(frames["users"])
    schema = users.collect_schema()
    users = users.select(
        "sourcedId", ssid=_value(mapping.student_id, schema), login=_value(mapping.teacher_login, schema)
    )
    enrollments = _active(frames["enrollments"]).filter(pl.col("role").is_in(["student", "teacher"]))
    if mapping.teachers == "primary":
        enrollments = enrollments.filter((pl.col("role") == "student") | pl.col("primary").fill_null(False))
    return (
        enrollments.select("classSourcedId", "userSourcedId", "role")
        .join(classes.lazy().select(classSourcedId="sourcedId", school="school"), on="classSourcedId")
        .join(users, left_on="userSourcedId", right_on="sourcedId")
        .select("classSourcedId", "userSourcedId", "role", "school",
                member=pl.when(pl.col("role") == "student").then("ssid").otherwise("login"))  # fmt: skip
        .collect()
    )


# --- findings --------------------------------------------------------------------------------------------


def _per_school(frame: pl.DataFrame, item: str, *, code: str, file: str, column: str | None, what: str,
                outcome: str, point_at_school: bool = False) -> list[dict]:  # fmt: skip
    """One finding per school (a few: a loop over them is fine) for the `item` sourcedIds of `frame` (with a
    `school` column), naming the school or its first example by sourcedId."""
    if frame.height == 0:
        return []
    counted = frame.group_by("school").agg(
        n=pl.col(item).n_unique(), examples=pl.col(item).unique().sort().head(EXAMPLES)
    ).sort("school")
    found = counted.select(
        sourced_id=pl.col("school") if point_at_school else pl.col("examples").list.first(),
        message=pl.format("school {}: {} {} {} (e.g. {})", pl.col("school").fill_null("(none)"), "n", pl.lit(what),
                          pl.lit(outcome), pl.col("examples").list.join(", ")),
    )  # fmt: skip
    return [Finding(code, Severity.WARNING, rec["message"], file, column=column,
                    sourced_id=rec["sourced_id"]).to_dict() for rec in found.iter_rows(named=True)]  # fmt: skip


def _oversize_findings(big: pl.DataFrame, oversize: str) -> list[dict]:
    outcome = "skipped" if oversize == "skip" else "split into groups of at most 200"
    found = big.sort("sourcedId").select(
        "sourcedId", value=pl.col("n").cast(pl.String),
        message=pl.format("class {} has {} students, more than CERS's {} per group: {}", "sourcedId", "n",
                          pl.lit(MAX_STUDENTS_PER_GROUP), pl.lit(outcome)),
    )  # fmt: skip
    return [Finding("cers.group_too_large", Severity.WARNING, rec["message"], "classes.csv", value=rec["value"],
                    sourced_id=rec["sourcedId"]).to_dict() for rec in found.iter_rows(named=True)]  # fmt: skip


# --- build -----------------------------------------------------------------------------------------------


def build_groups(
    frames: Mapping[str, pl.LazyFrame | pl.DataFrame], mapping: CersMapping, filters: CersFilters
) -> tuple[pl.DataFrame, list[dict]]:
    """The CERS groups of a snapshot (COLUMNS, sorted by KEY) and the findings made on the way, as dicts
    (Finding.to_dict: warnings about rows of the snapshot, each naming its row by sourcedId)."""
    classes = _classes(frames, mapping).filter(_kept_by(filters)).collect()
    found = _per_school(classes.filter(pl.col("school_natural_id").is_null()), "sourcedId",
                        code="cers.school_without_id", file="orgs.csv", column=mapping.school_id,
                        what="classes skipped:", outcome="the school has no " + mapping.school_id,
                        point_at_school=True)  # fmt: skip
    classes = classes.filter(pl.col("school_natural_id").is_not_null())
    found += _per_school(classes.filter(pl.col("school_year").is_null()), "sourcedId",
                         code="cers.class_without_school_year", file="classes.csv", column="termSourcedIds",
                         what="classes skipped:", outcome="no term gives a school year")  # fmt: skip
    classes = classes.filter(pl.col("school_year").is_not_null())

    members = _members(frames, mapping, classes)
    for role, code, column in (("student", "cers.student_without_id", mapping.student_id),
                               ("teacher", "cers.teacher_without_login", mapping.teacher_login)):  # fmt: skip
        missing = members.filter((pl.col("role") == role) & pl.col("member").is_null())
        found += _per_school(missing, "userSourcedId", code=code, file="users.csv", column=column,
                             what=f"enrolled {role}s",
                             outcome=f"have no {column}: left out of their groups")  # fmt: skip
    lists = members.drop_nulls("member").group_by("classSourcedId").agg(
        teachers=pl.col("member").filter(pl.col("role") == "teacher").unique().sort(),
        students=pl.col("member").filter(pl.col("role") == "student").unique().sort(),
    )
    groups = (
        classes.join(lists, left_on="sourcedId", right_on="classSourcedId", how="left")
        .with_columns(pl.col("teachers", "students").fill_null(_EMPTY))
        .filter((pl.col("teachers").list.len() > 0) | (pl.col("students").list.len() > 0))
        .select("sourcedId", "school", "school_natural_id", "school_year", "subject_code", "teachers", "students",
                base=base_name(pl.col("raw_name"), pl.col("sourcedId")),
                n=pl.col("students").list.len())  # fmt: skip
    )
    big = groups.filter(pl.col("n") > MAX_STUDENTS_PER_GROUP)
    found += _oversize_findings(big, mapping.oversize)
    groups = groups.filter(pl.col("n") <= MAX_STUDENTS_PER_GROUP).with_columns(part=pl.lit(""))
    if mapping.oversize == "split" and big.height:
        groups = pl.concat([groups, _split(big)])
    named, collided = unique_names(groups.rename({"sourcedId": "class_sourced_id"}))
    found += _per_school(collided, "class_sourced_id", code="cers.group_name_collision", file="classes.csv",
                         column=None, what="classes share a group name with another class of their school and year:",
                         outcome="each got a hash suffix")  # fmt: skip
    return named.select(COLUMNS).sort(KEY), found


def _split(big: pl.DataFrame) -> pl.DataFrame:
    """Each oversize group as balanced parts of at most MAX_STUDENTS_PER_GROUP students, named "_1", "_2"..."""
    parts = (pl.col("n") + MAX_STUDENTS_PER_GROUP - 1) // MAX_STUDENTS_PER_GROUP
    students = (
        big.select("sourcedId", "n", "students").explode("students")
        .with_columns(part=pl.int_range(pl.len()).over("sourcedId") * parts // pl.col("n") + 1)
        .group_by("sourcedId", "part").agg(pl.col("students").sort())
    )  # fmt: skip
    return big.drop("students").join(students, on="sourcedId").with_columns(
        part=pl.format("_{}", "part")
    ).select(big.columns + ["part"])


# --- changes ---------------------------------------------------------------------------------------------


def changed_groups(old: pl.DataFrame | None, new: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """The groups to send (COLUMNS): new ones, changed ones, and vanished ones emptied; with counts."""
    compared = compared_groups(old, new)
    sent = compared.filter(pl.col("kind") != "unchanged").drop("kind")
    kinds = compared["kind"].value_counts()
    count = dict(zip(kinds["kind"].to_list(), kinds["count"].to_list(), strict=True))
    counts = {"groups": new.height, "sent": sent.height}
    counts.update({kind: count.get(kind, 0) for kind in ("added", "changed", "emptied", "unchanged")})
    return sent, counts


def compared_groups(old: pl.DataFrame | None, new: pl.DataFrame) -> pl.DataFrame:
    """Every group of `new` and every vanished one of `old`, as it would be sent (COLUMNS: a vanished one
    emptied), sorted by KEY, with `kind`: added, changed, emptied or unchanged (the admin console shows it)."""
    new = _typed(new).sort(KEY)
    if old is None:
        return new.with_columns(kind=pl.lit("added"))
    match = ["school_natural_id", "school_year", "lower"]
    lower = pl.col("group_name").str.to_lowercase().alias("lower")
    paired = new.with_columns(lower).join(_typed(old).with_columns(lower), on=match, how="full", suffix="_old",
                                          coalesce=True)  # fmt: skip
    same = (
        (pl.col("group_name") == pl.col("group_name_old"))
        & (pl.col("subject_code") == pl.col("subject_code_old"))
        & (pl.col("teachers") == pl.col("teachers_old"))
        & (pl.col("students") == pl.col("students_old"))
    )
    paired = paired.with_columns(
        kind=pl.when(pl.col("group_name_old").is_null()).then(pl.lit("added"))
        .when(pl.col("group_name").is_null()).then(pl.lit("emptied"))
        .when(same).then(pl.lit("unchanged")).otherwise(pl.lit("changed"))
    )  # fmt: skip
    emptied = pl.col("kind") == "emptied"
    return paired.select(
        "school_natural_id",
        group_name=pl.when(emptied).then("group_name_old").otherwise("group_name"),
        school_year="school_year",
        subject_code=pl.when(emptied).then(pl.lit("")).otherwise("subject_code"),
        teachers=pl.when(emptied).then(_EMPTY).otherwise("teachers"),
        students=pl.when(emptied).then(_EMPTY).otherwise("students"),
        class_sourced_id=pl.when(emptied).then("class_sourced_id_old").otherwise("class_sourced_id"),
        kind="kind",
    ).sort(KEY)


def _typed(groups: pl.DataFrame) -> pl.DataFrame:
    """Groups in COLUMNS order with one set of types, their member lists sorted (frames may come from disk)."""
    return groups.select(
        pl.col("school_natural_id", "group_name", "subject_code", "class_sourced_id").cast(pl.String),
        pl.col("school_year").cast(pl.Int32),
        pl.col("teachers", "students").cast(_NAMES).fill_null(_EMPTY).list.unique().list.sort(),
    ).select(COLUMNS)


# --- files -----------------------------------------------------------------------------------------------


def group_files(groups: pl.DataFrame, max_rows: int) -> list[bytes]:
    """The CSV files for `groups`: each at most `max_rows` data rows, cut between groups, a school whole in
    one file when it fits. The same groups always give the same bytes."""
    groups = _typed(groups).sort(KEY).with_row_index("order").with_columns(
        rows=1 + pl.col("teachers").list.len() + pl.col("students").list.len()
    )
    if groups.height == 0:
        return []
    if (too_big := groups.filter(pl.col("rows") > max_rows)).height:
        raise ValueError(f"{too_big.height} groups have more than {max_rows} rows and fit no file")
    # Packing units: a school that fits in a file is one unit, a larger school is one unit per group.
    school_rows = pl.col("rows").sum().over("school_natural_id")
    groups = groups.with_columns(unit=pl.when(school_rows <= max_rows).then(pl.col("order").min().over(
        "school_natural_id")).otherwise("order"))  # fmt: skip
    units = groups.group_by("unit").agg(pl.col("rows").sum().cast(pl.Int64)).sort("unit").with_columns(
        end=pl.col("rows").cum_sum()
    )
    file_of_unit = _pack(units["end"], max_rows)
    groups = groups.join(units.select("unit", file=file_of_unit), on="unit")
    rows = _rows(groups)
    return [_csv(rows.filter(pl.col("file") == f)) for f in range(int(file_of_unit.max()) + 1)]


def _pack(ends: pl.Series, max_rows: int) -> pl.Series:
    """The file of each unit, filling files in order: a cut wherever the next unit would not fit. One step
    per file (a binary search for the last unit that fits), not per unit."""
    starts, start = [], 0
    while start < len(ends):
        starts.append(start)
        offset = int(ends[start - 1]) if start else 0
        start = int(ends.search_sorted(offset + max_rows, side="right"))  # the units before it fit
    first_units = pl.Series(starts, dtype=pl.Int64)
    return (first_units.search_sorted(pl.int_range(len(ends), eager=True), side="right") - 1).alias("file")


def _rows(groups: pl.DataFrame) -> pl.DataFrame:
    """The CSV rows of every group: a first row with the subject, then teachers, then students, in order."""
    keys = ["file", "order", "group_name", "school_natural_id", "school_year"]
    first = groups.select(*keys, kind=pl.lit(0), subject_code="subject_code", student_ssid=pl.lit(None, pl.String),
                          group_user_login=pl.lit(None, pl.String))  # fmt: skip
    teachers = groups.select(*keys, kind=pl.lit(1), subject_code=pl.lit(None, pl.String),
                             student_ssid=pl.lit(None, pl.String), group_user_login="teachers")  # fmt: skip
    students = groups.select(*keys, kind=pl.lit(2), subject_code=pl.lit(None, pl.String),
                             student_ssid="students", group_user_login=pl.lit(None, pl.String))  # fmt: skip
    members = pl.concat([teachers.explode("group_user_login"), students.explode("student_ssid")])
    members = members.filter(pl.col("group_user_login").is_not_null() | pl.col("student_ssid").is_not_null())
    return pl.concat([first, members]).sort("order", "kind", "group_user_login", "student_ssid")


def _csv(rows: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    rows.select(HEADER).write_csv(buffer, line_terminator="\n", quote_style="necessary", null_value="")
    return buffer.getvalue()
