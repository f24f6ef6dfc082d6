"""The 41 rostering read operations of OneRoster 1.1 and 1.2, as questions to a publication.

Collections (12) and their single records (12): `/schools` are the orgs of type school, `/terms` and
`/gradingPeriods` the academicSessions of those types, `/students` and `/teachers` the users holding that role
(any of their roles in 1.2). Relationships (17), each answering with records of the child collection:
- /schools/{id}/classes, /courses (the school's org), /enrollments, /students and /teachers (users holding the
  role at the school), /terms (the terms of the school's classes);
- /schools/{sid}/classes/{cid}/enrollments, /students, /teachers (the class must be the school's);
- /terms/{id}/classes, /terms/{id}/gradingPeriods (its child sessions of that type), /courses/{id}/classes;
- /students|/teachers|/users/{id}/classes (classes they have an active enrollment in);
- /classes/{id}/students, /classes/{id}/teachers (users with an active enrollment of that role in it).
The parent of a relationship must be a record the vendor sees (a school must be a school, a student a
student); otherwise the answer is 404, as for a single record. A relationship never reaches past the
publication, which holds only the target's scope.

Scopes: relationships need roster.readonly; demographics roster-demographics.readonly or roster.readonly;
every other collection and record roster-core.readonly or roster.readonly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from daemon.targets.api.errors import unknown_object
from daemon.targets.api.reader import Reader, restrict


@dataclass(frozen=True, slots=True)
class Collection:
    entity: str  # the stored collection
    plural: str  # the response's wrapper for many
    singular: str  # for one
    where: pl.Expr | None = None  # what makes a stored record one of these

    @property
    def scopes(self) -> tuple[str, ...]:
        if self.entity == "demographics":
            return ("roster-demographics.readonly", "roster.readonly")
        return ("roster-core.readonly", "roster.readonly")


def _has_role(role: str) -> pl.Expr:
    return pl.col("_roles").list.contains(role)


COLLECTIONS: dict[str, Collection] = {
    "academicSessions": Collection("academicSessions", "academicSessions", "academicSession"),
    "classes": Collection("classes", "classes", "class"),
    "courses": Collection("courses", "courses", "course"),
    "demographics": Collection("demographics", "demographics", "demographics"),
    "enrollments": Collection("enrollments", "enrollments", "enrollment"),
    "gradingPeriods": Collection("academicSessions", "academicSessions", "academicSession",
                                 pl.col("type") == "gradingPeriod"),  # fmt: skip
    "orgs": Collection("orgs", "orgs", "org"),
    "schools": Collection("orgs", "orgs", "org", pl.col("type") == "school"),
    "students": Collection("users", "users", "user", _has_role("student")),
    "teachers": Collection("users", "users", "user", _has_role("teacher")),
    "terms": Collection("academicSessions", "academicSessions", "academicSession", pl.col("type") == "term"),
    "users": Collection("users", "users", "user"),
}
RELATIONSHIP_SCOPES = ("roster.readonly",)
ACTIVE = pl.col("status") == "active"


@dataclass(frozen=True, slots=True)
class Selection:
    """What a collection request reads: `child`'s records satisfying `where`, cached under `key`."""

    child: Collection
    where: pl.Expr | None
    key: str


Resolver = Callable[[Reader, Path, str, tuple[str, ...]], Selection]


def _and(collection: Collection, extra: pl.Expr) -> pl.Expr:
    return extra if collection.where is None else collection.where & extra


def _parent(reader: Reader, folder: Path, version: str, name: str, sourced_id: str,
            extra: pl.Expr | None = None) -> None:  # fmt: skip
    parent = COLLECTIONS[name]
    where = parent.where if extra is None else _and(parent, extra)
    if not reader.exists(folder, version, parent.entity, sourced_id, where):
        raise unknown_object(f"No {parent.singular} with sourcedId {sourced_id!r}")


def _enrolled(reader: Reader, folder: Path, version: str, column: str, where: pl.Expr, key: str) -> pl.Series:
    return reader.values(folder, version, "enrollments", ACTIVE & where, column, key)


def _school_classes(reader, folder, version, ids):
    (school,) = ids
    _parent(reader, folder, version, "schools", school)
    return Selection(COLLECTIONS["classes"], pl.col("school") == school, f"school-classes:{school}")


def _school_courses(reader, folder, version, ids):
    (school,) = ids
    _parent(reader, folder, version, "schools", school)
    return Selection(COLLECTIONS["courses"], pl.col("org") == school, f"school-courses:{school}")


def _school_enrollments(reader, folder, version, ids):
    (school,) = ids
    _parent(reader, folder, version, "schools", school)
    return Selection(COLLECTIONS["enrollments"], pl.col("school") == school, f"school-enrollments:{school}")


def _school_people(role: str) -> Resolver:
    name = f"{role}s"

    def resolve(reader, folder, version, ids):
        (school,) = ids
        _parent(reader, folder, version, "schools", school)
        child = COLLECTIONS[name]
        return Selection(child, _and(child, pl.col("_orgs").list.contains(school)), f"school-{name}:{school}")

    return resolve


def _school_terms(reader, folder, version, ids):
    (school,) = ids
    _parent(reader, folder, version, "schools", school)
    terms = reader.values(folder, version, "classes", pl.col("school") == school, "terms", f"school:{school}")
    child = COLLECTIONS["terms"]
    return Selection(child, _and(child, restrict(terms)), f"school-terms:{school}")


def _class_of_school(reader, folder, version, school: str, klass: str) -> None:
    _parent(reader, folder, version, "schools", school)
    _parent(reader, folder, version, "classes", klass, pl.col("school") == school)


def _school_class_enrollments(reader, folder, version, ids):
    school, klass = ids
    _class_of_school(reader, folder, version, school, klass)
    where = (pl.col("school") == school) & (pl.col("class") == klass)
    return Selection(COLLECTIONS["enrollments"], where, f"school-class-enrollments:{school}/{klass}")


def _class_people(role: str, in_school: bool) -> Resolver:
    name = f"{role}s"

    def resolve(reader, folder, version, ids):
        if in_school:
            school, klass = ids
            _class_of_school(reader, folder, version, school, klass)
        else:
            (klass,) = ids
            _parent(reader, folder, version, "classes", klass)
        where = (pl.col("class") == klass) & (pl.col("role") == role)
        users = _enrolled(reader, folder, version, "user", where, f"class-{role}:{klass}")
        child = COLLECTIONS[name]
        return Selection(child, _and(child, restrict(users)), f"class-{name}:{klass}")

    return resolve


def _term_classes(reader, folder, version, ids):
    (term,) = ids
    _parent(reader, folder, version, "terms", term)
    return Selection(COLLECTIONS["classes"], pl.col("terms").list.contains(term), f"term-classes:{term}")


def _term_grading_periods(reader, folder, version, ids):
    (term,) = ids
    _parent(reader, folder, version, "terms", term)
    child = COLLECTIONS["gradingPeriods"]
    return Selection(child, _and(child, pl.col("parent") == term), f"term-gradingPeriods:{term}")


def _course_classes(reader, folder, version, ids):
    (course,) = ids
    _parent(reader, folder, version, "courses", course)
    return Selection(COLLECTIONS["classes"], pl.col("course") == course, f"course-classes:{course}")


def _person_classes(parent: str) -> Resolver:
    def resolve(reader, folder, version, ids):
        (user,) = ids
        _parent(reader, folder, version, parent, user)
        classes = _enrolled(reader, folder, version, "class", pl.col("user") == user, f"user-classes:{user}")
        return Selection(COLLECTIONS["classes"], restrict(classes), f"{parent}-classes:{user}")

    return resolve


# (parent collection, child path) or (parent, "classes", child) -> resolver
RELATIONSHIPS: dict[tuple[str, ...], Resolver] = {
    ("schools", "classes"): _school_classes,
    ("schools", "courses"): _school_courses,
    ("schools", "enrollments"): _school_enrollments,
    ("schools", "students"): _school_people("student"),
    ("schools", "teachers"): _school_people("teacher"),
    ("schools", "terms"): _school_terms,
    ("schools", "classes", "enrollments"): _school_class_enrollments,
    ("schools", "classes", "students"): _class_people("student", in_school=True),
    ("schools", "classes", "teachers"): _class_people("teacher", in_school=True),
    ("terms", "classes"): _term_classes,
    ("terms", "gradingPeriods"): _term_grading_periods,
    ("courses", "classes"): _course_classes,
    ("students", "classes"): _person_classes("students"),
    ("teachers", "classes"): _person_classes("teachers"),
    ("users", "classes"): _person_classes("users"),
    ("classes", "students"): _class_people("student", in_school=False),
    ("classes", "teachers"): _class_people("teacher", in_school=False),
}
OPERATIONS = 2 * len(COLLECTIONS) + len(RELATIONSHIPS)  # 41
