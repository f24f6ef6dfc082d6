"""OneRoster CSV tables for 1.1 and 1.2 (1.2.1): files, columns in order, types, vocabularies, references.

Everything the validator, the generator and later stages know about the format lives here, as data.
Facts come from the 1EdTech CSV tables as digested in shared/reference/oneroster_csv.md (sections 5-8).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    """How a column's value is checked and normalised."""

    GUID = "guid"  # a sourcedId of this row
    REF = "ref"  # one sourcedId of another row
    REF_LIST = "ref_list"  # comma list of sourcedIds
    STRING = "string"
    SECRET = "secret"  # a password: checked like a string, its value never reported
    ENUM = "enum"
    BOOL = "bool"
    DATE = "date"
    DATETIME = "datetime"
    DATE_OR_DATETIME = "date_or_datetime"  # either form (lineItems' assignDate and dueDate, see _gradebook)
    YEAR = "year"
    FLOAT = "float"  # a decimal number (scores, weights)
    LIST = "list"  # comma list of free strings (subjects, periods)
    ENUM_LIST = "enum_list"  # comma list of vocabulary tokens (resources.roles)
    PAIRS = "pairs"  # comma list of {lhs:rhs} (scoreScales.scoreScaleValue)
    GRADES = "grades"  # comma list of grade codes (CEDS in 1.1)
    USER_IDS = "user_ids"  # comma list of {type:id}
    STATUS = "status"  # lifecycle: blank in bulk, active|tobedeleted in delta
    MODIFIED = "modified"  # lifecycle dateLastModified


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference from a column to the sourcedId of another entity."""

    entity: str
    # When set, the target row's `type` must be one of these (or an ext: value where the version allows it).
    target_types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: Kind
    required: bool = False
    vocabulary: tuple[str, ...] = ()
    extensible: bool = False  # 1.2: `ext:<name>` tokens are allowed
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Table:
    entity: str  # the file name without .csv, e.g. "academicSessions"
    columns: tuple[Column, ...]
    rostering: bool = False  # core rostering data, which rosterd ingests; the others are only validated
    # Legacy columns some 1.2 producers still write (accepted with a warning, then dropped).
    legacy: tuple[str, ...] = ()

    @property
    def file(self) -> str:
        return f"{self.entity}.csv"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)


STATUS_VALUES = ("active", "tobedeleted")
BOOL_VALUES = ("true", "false")
CEDS_GRADES = (
    "IT", "PR", "PK", "TK", "KG", "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12",
    "13", "PS", "UG", "Other",
)  # fmt: skip
ORG_TYPES = ("department", "school", "district", "local", "state", "national")
SESSION_TYPES = ("gradingPeriod", "semester", "schoolYear", "term")
CLASS_TYPES = ("homeroom", "scheduled")
USER_ROLES_11 = ("administrator", "aide", "guardian", "parent", "proctor", "relative", "student", "teacher")
ROLES_12 = (
    "aide", "counselor", "districtAdministrator", "guardian", "parent", "principal", "proctor", "relative",
    "siteAdministrator", "student", "systemAdministrator", "teacher",
)  # fmt: skip
ENROLLMENT_ROLES = ("administrator", "proctor", "student", "teacher")
SEX_11 = ("male", "female")
SEX_12 = ("male", "female", "unspecified", "other")
SCORE_STATUS = ("exempt", "fully graded", "not submitted", "partially graded", "submitted")
IMPORTANCE = ("primary", "secondary")
RESOURCE_ROLES = USER_ROLES_11  # resources.roles keeps the 1.1 user roles in 1.2 too
OBJECTIVE_SOURCES = ("case", "unknown")  # where a learning objective id comes from

RACE_FLAGS = (
    "americanIndianOrAlaskaNative", "asian", "blackOrAfricanAmerican", "nativeHawaiianOrOtherPacificIslander",
    "white", "demographicRaceTwoOrMoreRaces", "hispanicOrLatinoEthnicity",
)  # fmt: skip


def _c(name: str, kind: Kind, required: bool = False, **kw) -> Column:
    return Column(name, kind, required, **kw)


def _lifecycle() -> tuple[Column, ...]:
    return (
        _c("sourcedId", Kind.GUID, True),
        _c("status", Kind.STATUS, vocabulary=STATUS_VALUES),
        _c("dateLastModified", Kind.MODIFIED),
    )


def _enum(name: str, values: tuple[str, ...], required: bool, ext: bool) -> Column:
    return Column(name, Kind.ENUM, required, vocabulary=values, extensible=ext)


def _rostering(v12: bool) -> dict[str, Table]:
    """The rostering tables shared by both versions (users differs and is added by the caller)."""
    school = Ref("orgs", ("school",))
    return {
        "academicSessions": Table("academicSessions", (
            *_lifecycle(),
            _c("title", Kind.STRING, True),
            _enum("type", SESSION_TYPES, True, v12),
            _c("startDate", Kind.DATE, True),
            _c("endDate", Kind.DATE, True),
            _c("parentSourcedId", Kind.REF, ref=Ref("academicSessions")),
            _c("schoolYear", Kind.YEAR, True),
        ), rostering=True),
        "orgs": Table("orgs", (
            *_lifecycle(),
            _c("name", Kind.STRING, True),
            _enum("type", ORG_TYPES, True, v12),
            _c("identifier", Kind.STRING),
            _c("parentSourcedId", Kind.REF, ref=Ref("orgs")),
        ), rostering=True),
        "courses": Table("courses", (
            *_lifecycle(),
            _c("schoolYearSourcedId", Kind.REF, ref=Ref("academicSessions", ("schoolYear",))),
            _c("title", Kind.STRING, True),
            _c("courseCode", Kind.STRING),
            _c("grades", Kind.GRADES),
            _c("orgSourcedId", Kind.REF, True, ref=Ref("orgs")),
            _c("subjects", Kind.LIST),
            _c("subjectCodes", Kind.LIST),
        ), rostering=True),
        "classes": Table("classes", (
            *_lifecycle(),
            _c("title", Kind.STRING, True),
            _c("grades", Kind.GRADES),
            _c("courseSourcedId", Kind.REF, True, ref=Ref("courses")),
            _c("classCode", Kind.STRING),
            _enum("classType", CLASS_TYPES, True, v12),
            _c("location", Kind.STRING),
            _c("schoolSourcedId", Kind.REF, True, ref=school),
            _c("termSourcedIds", Kind.REF_LIST, True, ref=Ref("academicSessions")),
            _c("subjects", Kind.LIST),
            _c("subjectCodes", Kind.LIST),
            _c("periods", Kind.LIST),
        ), rostering=True),
        "enrollments": Table("enrollments", (
            *_lifecycle(),
            _c("classSourcedId", Kind.REF, True, ref=Ref("classes")),
            _c("schoolSourcedId", Kind.REF, True, ref=school),
            _c("userSourcedId", Kind.REF, True, ref=Ref("users")),
            _enum("role", ENROLLMENT_ROLES, True, v12),
            _c("primary", Kind.BOOL, vocabulary=BOOL_VALUES),
            _c("beginDate", Kind.DATE),
            _c("endDate", Kind.DATE),
        ), rostering=True),
        "demographics": Table("demographics", (
            Column("sourcedId", Kind.GUID, True, ref=Ref("users")),
            _c("status", Kind.STATUS, vocabulary=STATUS_VALUES),
            _c("dateLastModified", Kind.MODIFIED),
            _c("birthDate", Kind.DATE),
            _enum("sex", SEX_12 if v12 else SEX_11, False, v12),
            *(_c(flag, Kind.BOOL, vocabulary=BOOL_VALUES) for flag in RACE_FLAGS),
            _c("countryOfBirthCode", Kind.STRING),
            _c("stateOfBirthAbbreviation", Kind.STRING),
            _c("cityOfBirth", Kind.STRING),
            _c("publicSchoolResidenceStatus", Kind.STRING),
        ), rostering=True),
    }  # fmt: skip


def _users_11() -> Table:
    return Table("users", (
        *_lifecycle(),
        _c("enabledUser", Kind.BOOL, True, vocabulary=BOOL_VALUES),
        _c("orgSourcedIds", Kind.REF_LIST, True, ref=Ref("orgs")),
        _enum("role", USER_ROLES_11, True, False),
        _c("username", Kind.STRING, True),
        _c("userIds", Kind.USER_IDS),
        _c("givenName", Kind.STRING, True),
        _c("familyName", Kind.STRING, True),
        _c("middleName", Kind.STRING),
        _c("identifier", Kind.STRING),
        _c("email", Kind.STRING),
        _c("sms", Kind.STRING),
        _c("phone", Kind.STRING),
        _c("agentSourcedIds", Kind.REF_LIST, ref=Ref("users")),
        _c("grades", Kind.GRADES),
        _c("password", Kind.SECRET),
    ), rostering=True)  # fmt: skip


def _users_12() -> Table:
    return Table("users", (
        *_lifecycle(),
        _c("enabledUser", Kind.BOOL, True, vocabulary=BOOL_VALUES),
        _c("username", Kind.STRING, True),
        _c("userIds", Kind.USER_IDS),
        _c("givenName", Kind.STRING, True),
        _c("familyName", Kind.STRING, True),
        _c("middleName", Kind.STRING),
        _c("identifier", Kind.STRING),
        _c("email", Kind.STRING),
        _c("sms", Kind.STRING),
        _c("phone", Kind.STRING),
        _c("agentSourcedIds", Kind.REF_LIST, ref=Ref("users")),
        _c("grades", Kind.GRADES),
        _c("password", Kind.SECRET),
        _c("userMasterIdentifier", Kind.STRING),
        _c("preferredGivenName", Kind.STRING),
        _c("preferredMiddleName", Kind.STRING),
        _c("preferredFamilyName", Kind.STRING),
        _c("primaryOrgSourcedId", Kind.REF, ref=Ref("orgs")),
        _c("pronouns", Kind.STRING),
    ), rostering=True, legacy=("resourceSourcedIds",))  # fmt: skip


def _roles_12() -> dict[str, Table]:
    return {
        "roles": Table("roles", (
            *_lifecycle(),
            _c("userSourcedId", Kind.REF, True, ref=Ref("users")),
            _enum("roleType", IMPORTANCE, True, False),
            _enum("role", ROLES_12, True, True),
            _c("beginDate", Kind.DATE),
            _c("endDate", Kind.DATE),
            _c("orgSourcedId", Kind.REF, True, ref=Ref("orgs")),
            _c("userProfileSourcedId", Kind.REF, ref=Ref("userProfiles")),
        ), rostering=True),
        "userProfiles": Table("userProfiles", (
            *_lifecycle(),
            _c("userSourcedId", Kind.REF, True, ref=Ref("users")),
            _c("profileType", Kind.STRING, True),
            _c("vendorId", Kind.STRING, True),
            _c("applicationId", Kind.STRING),
            _c("description", Kind.STRING),
            _c("credentialType", Kind.STRING, True),
            _c("username", Kind.STRING, True),
            _c("password", Kind.SECRET),
        ), rostering=True),
    }  # fmt: skip


# The resources and gradebook files (shared/reference/oneroster_csv.md sections 5.8, 6.4, 7 and 8). rosterd
# does not ingest them, but checks their values and references so that a district learns when they are broken.
# Their references are optional ones (an unresolvable one is cleared in lenient mode), except a line item's
# category: a line item belongs to a category of the same package. Of the values the spec requires, only
# categories.title and lineItems.categorySourcedId are enforced as required so far.


def _ref(name: str, entity: str, *target_types: str, required: bool = False) -> Column:
    return Column(name, Kind.REF, required, ref=Ref(entity, target_types))


def _resources(v12: bool) -> dict[str, Table]:
    tables = (
        Table("resources", (
            *_lifecycle(),
            _c("vendorResourceId", Kind.STRING),
            _c("title", Kind.STRING),
            Column("roles", Kind.ENUM_LIST, vocabulary=RESOURCE_ROLES, extensible=v12),
            _enum("importance", IMPORTANCE, False, False),
            _c("vendorId", Kind.STRING),
            _c("applicationId", Kind.STRING),
        )),
        Table("classResources", (
            *_lifecycle(), _c("title", Kind.STRING), _ref("classSourcedId", "classes"),
            _ref("resourceSourcedId", "resources"),
        )),
        Table("courseResources", (
            *_lifecycle(), _c("title", Kind.STRING), _ref("courseSourcedId", "courses"),
            _ref("resourceSourcedId", "resources"),
        )),
    )  # fmt: skip
    if v12:
        tables += (Table("userResources", (
            *_lifecycle(), _ref("userSourcedId", "users"), _ref("orgSourcedId", "orgs"),
            _ref("classSourcedId", "classes"), _ref("resourceSourcedId", "resources"),
        )),)  # fmt: skip
    return {t.entity: t for t in tables}


def _gradebook(v12: bool) -> dict[str, Table]:
    # assignDate and dueDate: the 1.1 CSV tables give dates, the 1.2 data model date-times, and readers of 1.2
    # CSV disagree; both forms are accepted in both versions (README, "Choices where the spec is silent").
    session = (
        _ref("academicSessionSourcedId", "academicSessions", "gradingPeriod", "semester", "term") if v12
        else _ref("gradingPeriodSourcedId", "academicSessions")
    )  # a 1.2 line item's session must not be a whole school year
    status = _enum("scoreStatus", SCORE_STATUS, False, v12)
    tables = (
        Table("categories", (
            *_lifecycle(), _c("title", Kind.STRING, True), *((_c("weight", Kind.FLOAT),) if v12 else ()),
        )),
        Table("lineItems", (
            *_lifecycle(),
            _c("title", Kind.STRING),
            _c("description", Kind.STRING),
            _c("assignDate", Kind.DATE_OR_DATETIME),
            _c("dueDate", Kind.DATE_OR_DATETIME),
            _ref("classSourcedId", "classes"),
            _ref("categorySourcedId", "categories", required=True),
            session,
            _c("resultValueMin", Kind.FLOAT),
            _c("resultValueMax", Kind.FLOAT),
            *((_ref("schoolSourcedId", "orgs"),) if v12 else ()),
        )),
        Table("results", (
            *_lifecycle(),
            _ref("lineItemSourcedId", "lineItems"),
            _ref("studentSourcedId", "users"),
            status,
            _c("score", Kind.FLOAT),
            _c("scoreDate", Kind.DATE),
            _c("comment", Kind.STRING),
            *((
                _c("textScore", Kind.STRING),
                _ref("classSourcedId", "classes"),
                *(_c(flag, Kind.BOOL, vocabulary=BOOL_VALUES) for flag in ("inProgress", "incomplete", "late",
                                                                           "missing")),
            ) if v12 else ()),
        )),
    )  # fmt: skip
    if v12:
        source = _enum("source", OBJECTIVE_SOURCES, False, True)
        tables += (
            Table("scoreScales", (
                *_lifecycle(), _c("title", Kind.STRING), _c("type", Kind.STRING), _ref("orgSourcedId", "orgs"),
                _ref("courseSourcedId", "courses"), _ref("classSourcedId", "classes"),
                _c("scoreScaleValue", Kind.PAIRS),
            )),
            Table("lineItemLearningObjectiveIds", (
                *_lifecycle(), _ref("lineItemSourcedId", "lineItems"), source,
                _c("learningObjectiveId", Kind.STRING),
            )),
            Table("lineItemScoreScales", (
                *_lifecycle(), _c("title", Kind.STRING), _ref("lineItemSourcedId", "lineItems"),
                _ref("scoreScaleSourcedId", "scoreScales"),
            )),
            Table("resultLearningObjectiveIds", (
                *_lifecycle(), _ref("resultSourcedId", "results"), source, _c("learningObjectiveId", Kind.STRING),
                _c("score", Kind.FLOAT), _c("textScore", Kind.STRING),
            )),
            Table("resultScoreScales", (
                *_lifecycle(), _c("title", Kind.STRING), _ref("resultSourcedId", "results"),
                _ref("scoreScaleSourcedId", "scoreScales"),
            )),
        )  # fmt: skip
    return {t.entity: t for t in tables}


def _build(v12: bool) -> dict[str, Table]:
    tables = _rostering(v12)
    tables["users"] = _users_12() if v12 else _users_11()
    if v12:
        tables.update(_roles_12())
    tables.update(_resources(v12))
    tables.update(_gradebook(v12))
    return dict(sorted(tables.items(), key=lambda kv: kv[0].lower()))


@dataclass(frozen=True)
class Version:
    """One OneRoster CSV version: its tables and the files an ingestion needs."""

    name: str  # "1.1" or "1.2"
    tables: dict[str, Table]
    ingestion: tuple[str, ...]  # entities a bulk package must supply
    extensible: bool = field(default=False)

    def table_for_file(self, file: str) -> Table | None:
        entity = file[:-4] if file.endswith(".csv") else file
        return self.tables.get(entity)

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(t.file for t in self.tables.values())


V11 = Version("1.1", _build(False), ("academicSessions", "classes", "courses", "enrollments", "orgs", "users"))
V12 = Version(
    "1.2", _build(True), ("academicSessions", "classes", "courses", "enrollments", "orgs", "roles", "users"), True
)
VERSIONS = {"1.1": V11, "1.2": V12}

# Accepted `oneroster.version` values and the table set each maps to (1.2.1 is a correction of 1.2).
MANIFEST_VERSIONS = {"1.1": V11, "1.2": V12, "1.2.1": V12}

# Rostering entities in dependency order: a table only references tables before it (or itself).
DEPENDENCY_ORDER = (
    "orgs", "academicSessions", "courses", "classes", "users", "userProfiles", "roles", "enrollments",
    "demographics", "categories", "resources", "scoreScales", "lineItems", "lineItemLearningObjectiveIds",
    "lineItemScoreScales", "results", "resultLearningObjectiveIds", "resultScoreScales", "classResources",
    "courseResources", "userResources",
)  # fmt: skip

# Header names that only OneRoster 1.0 used, per file (shared/reference/oneroster_csv.md section 9.3).
V10_HEADERS = {
    "classes": ("grade", "termSourcedId"),
    "courses": ("schoolYearId", "grade"),
    "users": ("userId", "agents"),
    "demographics": ("userSourcedId", "birthdate"),
}

MANIFEST_FILE = "manifest.csv"
