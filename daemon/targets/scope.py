"""The part of a tenant's roster one licence target may see: `scoped_view(frames, scope, today)`.

`frames` is a stored snapshot (entity -> typed frame, lazy or not); the view has the same rostering entities
with the same columns, fewer rows, sorted by sourcedId. Only the rostering entities are in it (orgs,
academicSessions, courses, classes, users, enrollments, demographics, and in 1.2 roles and userProfiles):
gradebook and resources files (lineItems, results, categories, resources, ...) are left out entirely, since a
licence target is sent rosters. The view is meant to be exported as a bulk OneRoster package, so every
reference in it resolves to a row of the view.

How a `Scope` narrows the roster (an empty list narrows nothing):

* orgs: each entry names an org by sourcedId or identifier. The *selected* orgs are the named ones and all
  their descendants (parentSourcedId followed down: a district brings its schools). The view keeps the
  selected orgs and their ancestors (so parent references hold), but only the selected ones bring classes,
  courses and members: a school's scope does not bring the district's staff.
* courses: classes whose course is named by sourcedId or courseCode. subjects: classes with a named subject,
  a title compared case-insensitively or an SCED code compared exactly, taken from the class's own subjects
  and subjectCodes, or from its course's when the class has neither.
* courses kept: those a class of the view uses, and those of the selected orgs (every org when orgs are
  not scoped) that pass the course and subject filters themselves (so a school's scope brings its courses).
* class dates (`today` is given, never read from the clock): a class runs from the earliest startDate to
  the latest endDate of its terms. With class_start_days N, a class starting more than N days after
  `today` is held back until then; with class_end_days M, a class whose end is more than M days before
  `today` is left out. A class whose terms give no dates is not held back or left out by the window.
* roles: only enrollments with a listed role, and only users holding a listed role (1.1 users.role; 1.2 any
  row of theirs in roles).
* users: those with an enrollment in the view, plus the members of the selected orgs (1.1 orgSourcedIds;
  1.2 a roles row at the org, with a listed role when roles are scoped). Membership counts when orgs are
  scoped, and when nothing narrows classes by course or subject (then every user is a member: a scope of
  roles or e-mail domains alone covers the whole district); a scope by course or subject alone brings only
  the users of its classes. Parents and other agents come only as members, never through their students.
* email_domains: a user whose e-mail domain (after the last @, case-insensitive; a leading @ in the
  setting is ignored) is not listed is left out with their enrollments; a user without e-mail is outside.
* licences: each class gets, in the extra String column `metadata.licence` (also on its enrollments), the
  licence of the first key that matches: its course's sourcedId, then its courseCode, then a subject (title
  case-insensitively, or code) of the class or of its course; among subjects, the key listed first in
  `licences` wins. No match: null. The column exists only when `licences` is non-empty.

References are kept whole: list references are trimmed to rows of the view (users.orgSourcedIds and
agentSourcedIds; an emptied list becomes null); optional references to rows outside the view are nulled
(orgs.parentSourcedId of a kept root, users.primaryOrgSourcedId, roles.userProfileSourcedId); a row whose
required reference left the view goes too (a 1.1 user left with no org, an enrollment whose school is not
in the view), except a course a class of the view uses: its org is kept as well, its parent nulled if need
be. classes.termSourcedIds is never trimmed: academicSessions are those the view's classes and courses
refer to, with their parents (so a session nothing refers to is left out, even by an empty scope).
demographics and userProfiles follow their users; 1.2 roles rows need their user and org in the view and,
when roles are scoped, a listed role. Apart from such sessions, the empty scope gives the roster unchanged.

Counts of what was left out, by the first reason that applies (each row of the input is in the view or in
exactly one count of its entity):

    classes_out_of_scope             not of a selected org, a listed course or a listed subject
    classes_not_started              starts more than class_start_days after today
    classes_ended                    ended more than class_end_days before today
    enrollments_of_classes_left_out  its class is not in the view
    enrollments_out_of_scope         its role is not listed, or its school is not in the view
    enrollments_of_users_left_out    its user is not in the view
    users_out_of_scope               no enrollment in the view and no membership, or no listed role
    users_outside_domains            e-mail outside email_domains (or none)
    users_without_org                1.1: none of the user's orgs is in the view
    orgs_out_of_scope, courses_out_of_scope   rows of those entities not in the view
    scope_orgs_unmatched, scope_courses_unmatched   entries of scope.orgs / scope.courses naming nothing
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta

import polars as pl

from .settings import Scope

ROSTERING = (
    "orgs", "academicSessions", "courses", "classes", "users", "roles", "userProfiles", "enrollments",
    "demographics",
)  # fmt: skip
REQUIRED = ("orgs", "academicSessions", "courses", "classes", "users", "enrollments")
LICENCE_COLUMN = "metadata.licence"
REASON = "_left_out"  # working column: the count a row is left out for, null while it stays
COUNTS = (
    "classes_out_of_scope", "classes_not_started", "classes_ended", "enrollments_of_classes_left_out",
    "enrollments_out_of_scope", "enrollments_of_users_left_out", "users_out_of_scope", "users_outside_domains",
    "users_without_org", "orgs_out_of_scope", "courses_out_of_scope", "scope_orgs_unmatched",
    "scope_courses_unmatched",
)  # fmt: skip

Frame = pl.DataFrame | pl.LazyFrame


def scoped_view(
    frames: Mapping[str, Frame], scope: Scope, today: date
) -> tuple[dict[str, pl.DataFrame], dict[str, int]]:
    """The roster `scope` lets a target see on `today`, and counts of what it leaves out (see above)."""
    t = _collect(frames)
    counts = dict.fromkeys(COUNTS, 0)
    v11 = "orgSourcedIds" in t["users"].columns
    orgs = t["orgs"]

    selected = _selected_orgs(orgs, scope.orgs, counts)  # None: every org
    classes = _judge_classes(t, scope, selected, today)
    _tally(classes[REASON], counts)
    kept_classes = classes.filter(pl.col(REASON).is_null())

    courses = _scoped_courses(t["courses"], scope, selected, kept_classes["courseSourcedId"], counts)
    # the selected orgs with their ancestors, and the org of every course in the view
    org_ids = (
        _walk(_links(orgs), orgs["sourcedId"] if selected is None else selected, upward=True)
        .append(courses["orgSourcedId"]).unique()
    )  # fmt: skip

    enrollments = t["enrollments"].with_columns(_enrollment_reason(kept_classes["sourcedId"], org_ids, scope))
    enrolled = enrollments.filter(pl.col(REASON).is_null())["userSourcedId"]
    users = _judge_users(t, scope, selected, enrolled, org_ids, v11)
    _tally(users[REASON], counts)
    users = users.filter(pl.col(REASON).is_null()).drop(REASON)
    user_ids = users["sourcedId"]

    user_gone = pl.when(~_among("userSourcedId", user_ids)).then(pl.lit("enrollments_of_users_left_out"))
    enrollments = enrollments.with_columns(pl.col(REASON).fill_null(user_gone))
    _tally(enrollments[REASON], counts)
    view = {
        "orgs": orgs.filter(_among("sourcedId", org_ids)).with_columns(_unless_among("parentSourcedId", org_ids)),
        "courses": courses,
        "classes": t["classes"].join(kept_classes.select("sourcedId"), on="sourcedId", how="semi"),
        "users": _trim_list(users, "agentSourcedIds", user_ids),
        "enrollments": enrollments.filter(pl.col(REASON).is_null()).drop(REASON),
    }
    if "primaryOrgSourcedId" in users.columns:
        view["users"] = view["users"].with_columns(_unless_among("primaryOrgSourcedId", org_ids))
    view["academicSessions"] = _sessions(t["academicSessions"], view["classes"], courses)
    _followers(t, view, scope)
    counts["orgs_out_of_scope"] = orgs.height - view["orgs"].height
    counts["courses_out_of_scope"] = t["courses"].height - courses.height

    if scope.licences:
        licences = _licences(kept_classes, scope.licences)
        view["classes"] = _with_licence(view["classes"], licences, "sourcedId")
        view["enrollments"] = _with_licence(view["enrollments"], licences, "classSourcedId")
    ordered = {entity: view[entity].sort("sourcedId") for entity in ROSTERING if entity in view}
    return ordered, counts


# --- input and small helpers -------------------------------------------------------------------------------


def _collect(frames: Mapping[str, Frame]) -> dict[str, pl.DataFrame]:
    """The rostering entities read (others are never read: they are not part of any view)."""
    missing = [entity for entity in REQUIRED if entity not in frames]
    if missing:
        raise ValueError(f"a roster snapshot needs {', '.join(missing)}")
    present = [entity for entity in ROSTERING if entity in frames]
    read = pl.collect_all([frames[entity].lazy() for entity in present])
    return dict(zip(present, read, strict=True))


def _among(column: str, ids: pl.Series) -> pl.Expr:
    """Whether the column's value is one of `ids` (never null)."""
    return pl.col(column).is_in(ids.implode()).fill_null(False)


def _unless_among(column: str, ids: pl.Series) -> pl.Expr:
    """An optional reference, nulled where it points outside `ids`."""
    return pl.when(_among(column, ids)).then(pl.col(column)).otherwise(None).alias(column)


def _tally(reasons: pl.Series, counts: dict[str, int]) -> None:
    tallied = reasons.drop_nulls().value_counts()
    for reason, n in zip(tallied[reasons.name], tallied["count"], strict=True):  # one row per reason
        counts[reason] += n


def _links(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(child="sourcedId", parent="parentSourcedId").drop_nulls()


def _walk(links: pl.DataFrame, start: pl.Series, upward: bool) -> pl.Series:
    """`start` and every id reached from it through `links` (child -> parent), up or down; one join per
    level of the hierarchy, and a cycle ends the walk (ids already found are not walked again)."""
    here, there = ("child", "parent") if upward else ("parent", "child")
    found = start.rename("id").unique().to_frame()
    frontier = found
    while frontier.height:
        reached = links.join(frontier, left_on=here, right_on="id", how="semi").select(id=there).unique()
        frontier = reached.join(found, on="id", how="anti")
        found = pl.concat([found, frontier])
    return found["id"]


def _trim_list(frame: pl.DataFrame, column: str, ids: pl.Series) -> pl.DataFrame:
    """`frame` with the list column keeping only items in `ids`, item order kept; an emptied list is null."""
    if column not in frame.columns:
        return frame
    items = frame.select("sourcedId", column).explode(column).filter(_among(column, ids))
    trimmed = items.group_by("sourcedId", maintain_order=True).agg(pl.col(column))
    return frame.drop(column).join(trimmed, on="sourcedId", how="left").select(frame.columns)


def _subject_match(titles: pl.Expr, codes: pl.Expr, wanted: Sequence[str]) -> pl.Expr:
    folded = [subject.lower() for subject in wanted]
    by_title = titles.list.eval(pl.element().str.to_lowercase().is_in(folded)).list.any()
    by_code = codes.list.eval(pl.element().is_in(list(wanted))).list.any()
    return by_title.fill_null(False) | by_code.fill_null(False)


def _course_match(wanted: Sequence[str], sourced_id: str, code: str) -> pl.Expr:
    return (pl.col(sourced_id).is_in(list(wanted)) | pl.col(code).is_in(list(wanted))).fill_null(False)


# --- orgs, classes, courses --------------------------------------------------------------------------------


def _selected_orgs(orgs: pl.DataFrame, wanted: Sequence[str], counts: dict[str, int]) -> pl.Series | None:
    """The listed orgs and their descendants, or None when orgs are not scoped."""
    if not wanted:
        return None
    names = pl.Series("name", list(dict.fromkeys(wanted)), dtype=pl.String)
    named = names.is_in(orgs["sourcedId"].implode()) | names.is_in(orgs["identifier"].drop_nulls().implode())
    counts["scope_orgs_unmatched"] = int((~named).sum())
    listed = orgs.filter(pl.col("sourcedId").is_in(names.implode()) | pl.col("identifier").is_in(names.implode()))
    return _walk(_links(orgs), listed["sourcedId"], upward=False)


def _judge_classes(t: dict[str, pl.DataFrame], scope: Scope, selected: pl.Series | None, today: date) -> pl.DataFrame:
    """Per class: its course's code and subjects, its term dates and REASON (a count's name; null: kept)."""
    classes = t["classes"]
    courses = t["courses"].select(
        courseSourcedId="sourcedId", courseCode="courseCode", courseSubjects="subjects",
        courseSubjectCodes="subjectCodes",
    )  # fmt: skip
    sessions = t["academicSessions"].select(term="sourcedId", start="startDate", end="endDate")
    spans = (
        classes.select("sourcedId", term="termSourcedIds").explode("term")
        .join(sessions, on="term")
        .group_by("sourcedId").agg(pl.col("start").min(), pl.col("end").max())
    )  # fmt: skip
    info = (
        classes.select("sourcedId", "courseSourcedId", "schoolSourcedId", "subjects", "subjectCodes")
        .join(courses, on="courseSourcedId", how="left")
        .join(spans, on="sourcedId", how="left")
    )  # fmt: skip
    in_scope = pl.lit(True)
    if selected is not None:
        in_scope &= _among("schoolSourcedId", selected)
    if scope.courses:
        in_scope &= _course_match(scope.courses, "courseSourcedId", "courseCode")
    if scope.subjects:
        own = (pl.col("subjects").list.len() > 0) | (pl.col("subjectCodes").list.len() > 0)
        own = own.fill_null(False)
        titles = pl.when(own).then(pl.col("subjects")).otherwise(pl.col("courseSubjects"))
        codes = pl.when(own).then(pl.col("subjectCodes")).otherwise(pl.col("courseSubjectCodes"))
        in_scope &= _subject_match(titles, codes, scope.subjects)
    reason = pl.when(~in_scope).then(pl.lit("classes_out_of_scope"))
    if scope.class_start_days is not None:
        horizon = today + timedelta(days=scope.class_start_days)
        reason = reason.when(pl.col("start") > horizon).then(pl.lit("classes_not_started"))
    if scope.class_end_days is not None:
        cutoff = today - timedelta(days=scope.class_end_days)
        reason = reason.when(pl.col("end") < cutoff).then(pl.lit("classes_ended"))
    return info.with_columns(reason.otherwise(pl.lit(None, dtype=pl.String)).alias(REASON))


def _scoped_courses(
    courses: pl.DataFrame, scope: Scope, selected: pl.Series | None, used: pl.Series, counts: dict[str, int]
) -> pl.DataFrame:
    """Courses the view's classes use, and the courses of the selected orgs that pass the course and
    subject filters themselves."""
    if scope.courses:
        names = pl.Series(list(dict.fromkeys(scope.courses)), dtype=pl.String)
        named = names.is_in(courses["sourcedId"].implode()) | names.is_in(courses["courseCode"].drop_nulls().implode())
        counts["scope_courses_unmatched"] = int((~named).sum())
    own = pl.lit(True)
    if selected is not None:
        own &= _among("orgSourcedId", selected)
    if scope.courses:
        own &= _course_match(scope.courses, "sourcedId", "courseCode")
    if scope.subjects:
        own &= _subject_match(pl.col("subjects"), pl.col("subjectCodes"), scope.subjects)
    return courses.filter(own | _among("sourcedId", used))


def _sessions(sessions: pl.DataFrame, classes: pl.DataFrame, courses: pl.DataFrame) -> pl.DataFrame:
    used = classes["termSourcedIds"].explode().append(courses["schoolYearSourcedId"]).drop_nulls()
    ids = _walk(_links(sessions), used, upward=True)
    return sessions.filter(_among("sourcedId", ids)).with_columns(_unless_among("parentSourcedId", ids))


# --- enrollments and users ---------------------------------------------------------------------------------


def _enrollment_reason(classes: pl.Series, orgs: pl.Series, scope: Scope) -> pl.Expr:
    fits = _among("schoolSourcedId", orgs)
    if scope.roles:
        fits &= pl.col("role").is_in(list(scope.roles)).fill_null(False)
    return (
        pl.when(~_among("classSourcedId", classes)).then(pl.lit("enrollments_of_classes_left_out"))
        .when(~fits).then(pl.lit("enrollments_out_of_scope"))
        .otherwise(pl.lit(None, dtype=pl.String)).alias(REASON)
    )  # fmt: skip


def _judge_users(
    t: dict[str, pl.DataFrame], scope: Scope, selected: pl.Series | None, enrolled: pl.Series, orgs: pl.Series,
    v11: bool,
) -> pl.DataFrame:  # fmt: skip
    """Users with their REASON (null: kept); 1.1 orgSourcedIds already trimmed to the view's orgs."""
    users = t["users"]
    roles = t.get("roles")
    wanted = list(scope.roles)
    if selected is not None:
        if v11:
            members = users.select("sourcedId", org="orgSourcedIds").explode("org").filter(_among("org", selected))
            member = _among("sourcedId", members["sourcedId"])
        elif roles is not None:
            held = roles.filter(_among("orgSourcedId", selected))
            held = held.filter(pl.col("role").is_in(wanted)) if wanted else held
            member = _among("sourcedId", held["userSourcedId"])
        else:
            member = pl.lit(False)
    else:
        member = pl.lit(not scope.courses and not scope.subjects)
    in_scope = member | _among("sourcedId", enrolled)
    if wanted:
        if v11:
            in_scope &= pl.col("role").is_in(wanted).fill_null(False)
        elif roles is not None:
            in_scope &= _among("sourcedId", roles.filter(pl.col("role").is_in(wanted))["userSourcedId"])
        else:
            in_scope = pl.lit(False)
    reason = pl.when(~in_scope).then(pl.lit("users_out_of_scope"))
    if scope.email_domains:
        domains = [domain.lower().lstrip("@") for domain in scope.email_domains]
        domain = pl.col("email").str.extract(r"@([^@]*)$").str.to_lowercase()
        reason = reason.when(~domain.is_in(domains).fill_null(False)).then(pl.lit("users_outside_domains"))
    users = users.with_columns(reason.otherwise(pl.lit(None, dtype=pl.String)).alias(REASON))
    if v11:
        users = _trim_list(users, "orgSourcedIds", orgs).with_columns(
            pl.col(REASON).fill_null(pl.when(pl.col("orgSourcedIds").is_null()).then(pl.lit("users_without_org")))
        )
    return users


def _followers(t: dict[str, pl.DataFrame], view: dict[str, pl.DataFrame], scope: Scope) -> None:
    """demographics, userProfiles and roles of the view's users (roles also at the view's orgs, with a listed
    role when roles are scoped)."""
    users = view["users"].select("sourcedId")
    if "demographics" in t:
        view["demographics"] = t["demographics"].join(users, on="sourcedId", how="semi")
    if "userProfiles" in t:
        view["userProfiles"] = t["userProfiles"].join(users, left_on="userSourcedId", right_on="sourcedId", how="semi")
    if "roles" in t:
        roles = t["roles"].filter(_among("userSourcedId", users["sourcedId"]) & _among("orgSourcedId",
                                                                                      view["orgs"]["sourcedId"]))
        if scope.roles:
            roles = roles.filter(pl.col("role").is_in(list(scope.roles)))
        profiles = view["userProfiles"]["sourcedId"] if "userProfiles" in view else pl.Series([], dtype=pl.String)
        view["roles"] = roles.with_columns(_unless_among("userProfileSourcedId", profiles))


# --- licences ----------------------------------------------------------------------------------------------


def _licences(classes: pl.DataFrame, licences: Mapping[str, str]) -> pl.DataFrame:
    """(sourcedId, metadata.licence) for the classes with a matching key (see the module's docstring)."""
    keys = pl.DataFrame(
        {"key": list(licences), LICENCE_COLUMN: list(licences.values())},
        schema={"key": pl.String, LICENCE_COLUMN: pl.String},
    ).with_row_index("order")
    folded = keys.with_columns(pl.col("key").str.to_lowercase())

    def candidates(columns: Sequence[str], rank: int) -> pl.DataFrame:
        parts = [classes.select("sourcedId", key=pl.col(c)).explode("key") if classes.schema[c] != pl.String
                 else classes.select("sourcedId", key=pl.col(c)) for c in columns]  # fmt: skip
        return pl.concat(parts).drop_nulls("key").with_columns(rank=pl.lit(rank, dtype=pl.Int8))

    exact = pl.concat([
        candidates(["courseSourcedId"], 0), candidates(["courseCode"], 1),
        candidates(["subjectCodes", "courseSubjectCodes"], 2),
    ]).join(keys, on="key")  # fmt: skip
    titles = candidates(["subjects", "courseSubjects"], 2).with_columns(pl.col("key").str.to_lowercase())
    matches = pl.concat([exact, titles.join(folded, on="key")])
    return matches.group_by("sourcedId").agg(pl.col(LICENCE_COLUMN).sort_by("rank", "order").first())


def _with_licence(frame: pl.DataFrame, licences: pl.DataFrame, on: str) -> pl.DataFrame:
    """`frame` with metadata.licence last (replacing any such column it had)."""
    base = frame.drop(LICENCE_COLUMN, strict=False)
    return base.join(licences.rename({"sourcedId": on}), on=on, how="left").select(*base.columns, LICENCE_COLUMN)
