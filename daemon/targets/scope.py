"""The part of a tenant's roster one licence target may see: `scoped_view(frames, scope, today)`.

`frames` is a stored snapshot (entity -> typed frame, lazy or not); the view has the same rostering entities
with the same columns, fewer rows, sorted by sourcedId. Only the rostering entities are in it (orgs,
academicSessions, courses, classes, users, enrollments, demographics, and in 1.2 roles and userProfiles):
gradebook and resources files (lineItems, results, categories, resources, ...) are left out entirely, since a
licence target is sent rosters. The view is meant to be exported as a bulk OneRoster package, so every
reference in it resolves to a row of the view.

A licence target gets the people its vendor needs and no one else. The rule, with these words:

* *narrowing classes*: the scope lists orgs, courses or subjects (the date window does not count: it times
  classes, it does not choose whose roster this is);
* the *class roles*: student and teacher;
* the *roles let in*: the listed `roles`; with none listed, the class roles when the scope narrows classes,
  and every role when it does not;
* the *selected orgs*: the orgs named in `orgs` and all their descendants (parentSourcedId followed down: a
  district brings its schools); every org when `orgs` is empty;
* a user *holds* a role at an org: 1.1 users.role at each of the user's orgSourcedIds; 1.2 a roles row.

1. Classes: those of a selected org (schoolSourcedId) with, when listed, a listed course (sourcedId or
   courseCode) and a listed subject (a title compared case-insensitively or an SCED code compared exactly,
   from the class's own subjects and subjectCodes, or from its course's when the class has neither). Then
   the date window (`today` is given, never read from the clock): a class runs from the earliest startDate to
   the latest endDate of its terms; with class_start_days N, a class starting more than N days after `today`
   is held back until then; with class_end_days M, one whose end is more than M days before `today` is left
   out. A class whose terms give no dates is not held back or left out by the window.
2. Enrollments: those of a kept class whose role is among the roles let in and whose school is in the view.
3. Users, when the scope does not narrow classes (an empty scope, or only roles, email_domains, licences
   or the date window): the whole district's users holding a role let in, wherever they hold it. The empty
   scope keeps every user; a scope of roles alone keeps the district's users with those roles; a scope of
   e-mail domains alone keeps the district's users in those domains (rule 5).
4. Users, when the scope narrows classes: a user comes
   a. through a class: an enrollment kept by rule 2. The enrollment's role is what counts there, not the
      user's: whoever the district enrolled in a kept class as a student or teacher (or in another role the
      scope lists) is someone the vendor needs for that class. Students and teachers come only this way, so
      a Mathematics scope gets the people of Mathematics classes, not every teacher of the school.
   b. through an org: the user holds, at a selected org, a role the scope lists by name other than the class
      roles (administrator, aide, guardian, parent, relative, proctor, districtAdministrator, principal, ...).
      Such people come only where `roles` names their role, and only as members of the selected orgs (every
      org when `orgs` is empty): a school's scope does not bring the district's staff, and guardians and
      other agents never come through their students.
5. email_domains: a user whose e-mail domain is not listed is left out, with their enrollments. The domain
   is what follows the last @, compared case-insensitively with the listed ones (a leading @ in the setting
   is ignored); it must equal one of them: `district.org` does not let in `students.district.org`, whose
   users come only if it is listed too. A user with a blank e-mail, or one without an @, is left out.
6. Orgs: the selected orgs and their ancestors (so parent references hold), and the org of each course in
   the view; only the selected ones bring classes and members. Courses: those a class of the view uses, and
   those of the selected orgs that pass the course and subject filters themselves (so a school's scope
   brings its courses).
7. licences: each class gets, in the extra String column `metadata.licence` (also on its enrollments), the
   licence of the first key that matches: its course's sourcedId, then its courseCode, then a subject (title
   case-insensitively, or code) of the class or of its course; among subjects, the key listed first in
   `licences` wins. No match: null. The column exists only when `licences` is non-empty.

References are kept whole: list references are trimmed to rows of the view (users.orgSourcedIds and
agentSourcedIds; an emptied list becomes null); optional references to rows outside the view are nulled
(orgs.parentSourcedId of a kept root, users.primaryOrgSourcedId, roles.userProfileSourcedId); a row whose
required reference left the view goes too (a 1.1 user left with no org, an enrollment whose school is not
in the view), except a course a class of the view uses: its org is kept as well, its parent nulled if need
be. classes.termSourcedIds is never trimmed: when the scope chooses classes (by orgs, courses, subjects or
dates), academicSessions are those the view's classes and courses refer to, with their parents, and the
sessions below the classes' terms (their grading periods); otherwise every session is kept. demographics and
userProfiles follow their users; 1.2 roles rows need their user and org in the view and a role let in. The
empty scope gives the roster unchanged.

Counts of what was left out, by the first reason that applies, in this order (each row of the input is in
the view or in exactly one count of its entity):

    classes_out_of_scope             not of a selected org, a listed course or a listed subject
    classes_not_started              starts more than class_start_days after today
    classes_ended                    ended more than class_end_days before today
    enrollments_of_classes_left_out  its class is not in the view
    enrollments_role_not_listed      its role is not among the roles let in
    enrollments_of_orgs_left_out     its school is not in the view
    enrollments_of_users_left_out    its user is not in the view
    users_not_in_scope_orgs          4b: holds a listed role other than the class roles, at no selected org
    users_not_in_kept_classes        4a: holds a class role let in, or has an enrollment in a role let in,
                                     but no enrollment kept by rule 2
    users_role_not_listed            holds no role let in (3), or neither of the above (4)
    users_outside_domains            e-mail outside email_domains (or none)
    users_without_org                1.1: none of the user's orgs is in the view
    orgs_out_of_scope, courses_out_of_scope   rows of those entities not in the view
    scope_orgs_unmatched, scope_courses_unmatched   entries of scope.orgs / scope.courses naming nothing
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta

import polars as pl

from daemon.targets.settings import Scope

ROSTERING = (
    "orgs", "academicSessions", "courses", "classes", "users", "roles", "userProfiles", "enrollments",
    "demographics",
)  # fmt: skip
REQUIRED = ("orgs", "academicSessions", "courses", "classes", "users", "enrollments")
LICENCE_COLUMN = "metadata.licence"
REASON = "_left_out"  # working column: the count a row is left out for, null while it stays
COUNTS = (
    "classes_out_of_scope", "classes_not_started", "classes_ended", "enrollments_of_classes_left_out",
    "enrollments_role_not_listed", "enrollments_of_orgs_left_out", "enrollments_of_users_left_out",
    "users_not_in_scope_orgs", "users_not_in_kept_classes", "users_role_not_listed", "users_outside_domains",
    "users_without_org", "orgs_out_of_scope", "courses_out_of_scope", "scope_orgs_unmatched",
    "scope_courses_unmatched",
)  # fmt: skip
CLASS_ROLES = ("student", "teacher")

Frame = pl.DataFrame | pl.LazyFrame


def scoped_view(
    frames: Mapping[str, Frame], scope: Scope, today: date
) -> tuple[dict[str, pl.DataFrame], dict[str, int]]:
    """The roster `scope` lets a target see on `today`, and counts of what it leaves out (see above)."""
    view, counts, _rows = explained_view(frames, scope, today)
    return view, counts


def explained_view(
    frames: Mapping[str, Frame], scope: Scope, today: date
) -> tuple[dict[str, pl.DataFrame], dict[str, int], pl.DataFrame]:
    """scoped_view, with the rows it leaves out: (entity, sourcedId, reason), the reason being the count the
    row is in (one row per row counted; scope_orgs_unmatched and scope_courses_unmatched count entries of the
    scope, not rows). The admin console's preview shows them."""
    t = _collect(frames)
    counts = dict.fromkeys(COUNTS, 0)
    v11 = "orgSourcedIds" in t["users"].columns
    orgs = t["orgs"]
    let_in = roles_let_in(scope)

    selected = _selected_orgs(orgs, scope.orgs, counts)  # None: every org
    classes = _judge_classes(t, scope, selected, today)
    _tally(classes[REASON], counts)
    left_out = [_left_out("classes", classes)]
    kept_classes = classes.filter(pl.col(REASON).is_null())

    courses = _scoped_courses(t["courses"], scope, selected, kept_classes["courseSourcedId"], counts)
    # the selected orgs with their ancestors, and the org of every course in the view
    org_ids = (
        _walk(_links(orgs), orgs["sourcedId"] if selected is None else selected, upward=True)
        .append(courses["orgSourcedId"]).unique()
    )  # fmt: skip

    enrollments = t["enrollments"].with_columns(_enrollment_reason(kept_classes["sourcedId"], org_ids, let_in))
    users = _judge_users(t, scope, selected, enrollments, org_ids, v11)
    _tally(users[REASON], counts)
    left_out.append(_left_out("users", users))
    users = users.filter(pl.col(REASON).is_null()).drop(REASON)
    user_ids = users["sourcedId"]

    user_gone = pl.when(~_among("userSourcedId", user_ids)).then(pl.lit("enrollments_of_users_left_out"))
    enrollments = enrollments.with_columns(pl.col(REASON).fill_null(user_gone))
    _tally(enrollments[REASON], counts)
    left_out.append(_left_out("enrollments", enrollments))
    view = {
        "orgs": orgs.filter(_among("sourcedId", org_ids)).with_columns(_unless_among("parentSourcedId", org_ids)),
        "courses": courses,
        "classes": t["classes"].join(kept_classes.select("sourcedId"), on="sourcedId", how="semi"),
        "users": _trim_list(users, "agentSourcedIds", user_ids),
        "enrollments": enrollments.filter(pl.col(REASON).is_null()).drop(REASON),
    }
    if "primaryOrgSourcedId" in users.columns:
        view["users"] = view["users"].with_columns(_unless_among("primaryOrgSourcedId", org_ids))
    view["academicSessions"] = _sessions(t["academicSessions"], view["classes"], courses, scope)
    _followers(t, view, let_in)
    counts["orgs_out_of_scope"] = orgs.height - view["orgs"].height
    counts["courses_out_of_scope"] = t["courses"].height - courses.height
    for entity, reason in (("orgs", "orgs_out_of_scope"), ("courses", "courses_out_of_scope")):
        gone = t[entity].join(view[entity], on="sourcedId", how="anti").with_columns(pl.lit(reason).alias(REASON))
        left_out.append(_left_out(entity, gone))

    if scope.licences:
        licences = _licences(kept_classes, scope.licences)
        view["classes"] = _with_licence(view["classes"], licences, "sourcedId")
        view["enrollments"] = _with_licence(view["enrollments"], licences, "classSourcedId")
    ordered = {entity: view[entity].sort("sourcedId") for entity in ROSTERING if entity in view}
    return ordered, counts, pl.concat(left_out)


def narrows_classes(scope: Scope) -> bool:
    """Whether the scope chooses classes by what they are (orgs, courses, subjects); see the rule above."""
    return bool(scope.orgs or scope.courses or scope.subjects)


def roles_let_in(scope: Scope) -> list[str] | None:
    """The roles a user or enrollment may come in (None: every role); see the rule above."""
    if scope.roles:
        return list(dict.fromkeys(scope.roles))
    return list(CLASS_ROLES) if narrows_classes(scope) else None


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


def _left_out(entity: str, frame: pl.DataFrame) -> pl.DataFrame:
    """(entity, sourcedId, reason) of the frame's rows with a REASON."""
    return frame.filter(pl.col(REASON).is_not_null()).select(
        entity=pl.lit(entity, dtype=pl.String), sourcedId=pl.col("sourcedId").cast(pl.String),
        reason=pl.col(REASON).cast(pl.String))  # fmt: skip


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


def _sessions(sessions: pl.DataFrame, classes: pl.DataFrame, courses: pl.DataFrame, scope: Scope) -> pl.DataFrame:
    if not narrows_classes(scope) and scope.class_start_days is None and scope.class_end_days is None:
        return sessions  # every class is in the view: so is every session
    terms = classes["termSourcedIds"].explode().drop_nulls()
    used = pl.concat([terms, courses["schoolYearSourcedId"]]).drop_nulls()  # (Series.append would change terms)
    links = _links(sessions)
    ids = pl.concat([_walk(links, used, upward=True), _walk(links, terms, upward=False)]).unique()
    return sessions.filter(_among("sourcedId", ids)).with_columns(_unless_among("parentSourcedId", ids))


# --- enrollments and users ---------------------------------------------------------------------------------


def _enrollment_reason(classes: pl.Series, orgs: pl.Series, let_in: list[str] | None) -> pl.Expr:
    reason = pl.when(~_among("classSourcedId", classes)).then(pl.lit("enrollments_of_classes_left_out"))
    if let_in is not None:
        reason = reason.when(~pl.col("role").is_in(let_in).fill_null(False)).then(pl.lit("enrollments_role_not_listed"))
    reason = reason.when(~_among("schoolSourcedId", orgs)).then(pl.lit("enrollments_of_orgs_left_out"))
    return reason.otherwise(pl.lit(None, dtype=pl.String)).alias(REASON)


def _held_roles(t: dict[str, pl.DataFrame], v11: bool) -> pl.DataFrame:
    """(user, role, org): each role a user holds at an org (1.1 users.role at each orgSourcedIds; 1.2 roles)."""
    if v11:
        return t["users"].select(user="sourcedId", role="role", org="orgSourcedIds").explode("org")
    roles = t.get("roles")
    if roles is None:
        return pl.DataFrame(schema={"user": pl.String, "role": pl.String, "org": pl.String})
    return roles.select(user="userSourcedId", role="role", org="orgSourcedId")


def _holders(held: pl.DataFrame, roles: Sequence[str], orgs: pl.Series | None = None) -> pl.Series:
    """Users holding one of `roles` (at one of `orgs`, when given)."""
    found = held.filter(pl.col("role").is_in(list(roles)).fill_null(False))
    return (found if orgs is None else found.filter(_among("org", orgs)))["user"]


def _people_reason(
    t: dict[str, pl.DataFrame], scope: Scope, selected: pl.Series | None, enrollments: pl.DataFrame, v11: bool
) -> pl.Expr:
    """Why a user is outside the scope before e-mail and orgs are looked at (rules 3 and 4); null: inside."""
    let_in = roles_let_in(scope)
    if let_in is None:  # rule 3 with every role let in: everyone
        return pl.lit(None, dtype=pl.String)
    held = _held_roles(t, v11)
    if not narrows_classes(scope):  # rule 3: the whole district's holders of a role let in
        return pl.when(~_among("sourcedId", _holders(held, let_in))).then(pl.lit("users_role_not_listed"))
    enrolled = enrollments.filter(pl.col(REASON).is_null())["userSourcedId"]
    named = [role for role in let_in if role not in CLASS_ROLES]
    members = _holders(held, named, selected)
    class_people = _holders(held, [r for r in let_in if r in CLASS_ROLES]).append(
        enrollments.filter(pl.col("role").is_in(let_in).fill_null(False))["userSourcedId"])  # fmt: skip
    return (
        pl.when(_among("sourcedId", enrolled) | _among("sourcedId", members)).then(pl.lit(None, dtype=pl.String))
        .when(_among("sourcedId", _holders(held, named))).then(pl.lit("users_not_in_scope_orgs"))
        .when(_among("sourcedId", class_people)).then(pl.lit("users_not_in_kept_classes"))
        .otherwise(pl.lit("users_role_not_listed"))
    )  # fmt: skip


def _judge_users(
    t: dict[str, pl.DataFrame], scope: Scope, selected: pl.Series | None, enrollments: pl.DataFrame,
    orgs: pl.Series, v11: bool,
) -> pl.DataFrame:  # fmt: skip
    """Users with their REASON (null: kept); 1.1 orgSourcedIds already trimmed to the view's orgs."""
    reason = _people_reason(t, scope, selected, enrollments, v11)
    if scope.email_domains:
        domains = [domain.lower().lstrip("@") for domain in scope.email_domains]
        domain = pl.col("email").str.extract(r"@([^@]*)$").str.to_lowercase()
        outside = pl.when(~domain.is_in(domains).fill_null(False)).then(pl.lit("users_outside_domains"))
        reason = pl.coalesce(reason, outside)
    users = t["users"].with_columns(reason.alias(REASON))
    if v11:
        users = _trim_list(users, "orgSourcedIds", orgs).with_columns(
            pl.col(REASON).fill_null(pl.when(pl.col("orgSourcedIds").is_null()).then(pl.lit("users_without_org")))
        )
    return users


def _followers(t: dict[str, pl.DataFrame], view: dict[str, pl.DataFrame], let_in: list[str] | None) -> None:
    """demographics, userProfiles and roles of the view's users (roles also at the view's orgs, with a role
    let in)."""
    users = view["users"].select("sourcedId")
    if "demographics" in t:
        view["demographics"] = t["demographics"].join(users, on="sourcedId", how="semi")
    if "userProfiles" in t:
        view["userProfiles"] = t["userProfiles"].join(users, left_on="userSourcedId", right_on="sourcedId", how="semi")
    if "roles" in t:
        roles = t["roles"].filter(_among("userSourcedId", users["sourcedId"]) & _among("orgSourcedId",
                                                                                      view["orgs"]["sourcedId"]))
        if let_in is not None:
            roles = roles.filter(pl.col("role").is_in(let_in))
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
