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
    YEAR = "year"
    LIST = "list"  # comma list of free strings (subjects, periods)
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
    rostering: bool = False  # core rostering data: fully checked; others are checked for shape and lifecycle
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


# References of the resources and gradebook files (shared/reference/oneroster_csv.md section 8), by column.
# rosterd does not ingest these files, so their references are checked as optional ones.
_OTHER_REFS = {
    "classSourcedId": Ref("classes"),
    "courseSourcedId": Ref("courses"),
    "resourceSourcedId": Ref("resources"),
    "categorySourcedId": Ref("categories"),
    "gradingPeriodSourcedId": Ref("academicSessions"),
    # 1.2: a line item's academic session must not be a whole school year.
    "academicSessionSourcedId": Ref("academicSessions", ("gradingPeriod", "semester", "term")),
    "schoolSourcedId": Ref("orgs"),
    "orgSourcedId": Ref("orgs"),
    "userSourcedId": Ref("users"),
    "studentSourcedId": Ref("users"),
    "lineItemSourcedId": Ref("lineItems"),
    "resultSourcedId": Ref("results"),
    "scoreScaleSourcedId": Ref("scoreScales"),
}


def _shape_only(entity: str, header: str, required: tuple[str, ...] = ()) -> Table:
    """Resources and gradebook files: header, row shape, lifecycle, required values and references."""
    names = header.split(",")
    cols = list(_lifecycle())
    for name in names[3:]:
        ref = _OTHER_REFS.get(name)
        cols.append(Column(name, Kind.REF if ref else Kind.STRING, name in required, ref=ref))
    return Table(entity, tuple(cols))


def _others_11() -> dict[str, Table]:
    return {
        t.entity: t
        for t in (
            _shape_only("categories", "sourcedId,status,dateLastModified,title", ("title",)),
            _shape_only("classResources", "sourcedId,status,dateLastModified,title,classSourcedId,resourceSourcedId"),
            _shape_only("courseResources", "sourcedId,status,dateLastModified,title,courseSourcedId,resourceSourcedId"),
            _shape_only(
                "resources",
                "sourcedId,status,dateLastModified,vendorResourceId,title,roles,importance,vendorId,applicationId",
            ),
            _shape_only(
                "lineItems",
                "sourcedId,status,dateLastModified,title,description,assignDate,dueDate,classSourcedId,"
                "categorySourcedId,gradingPeriodSourcedId,resultValueMin,resultValueMax",
            ),
            _shape_only(
                "results",
                "sourcedId,status,dateLastModified,lineItemSourcedId,studentSourcedId,scoreStatus,score,"
                "scoreDate,comment",
            ),
        )
    }


def _others_12() -> dict[str, Table]:
    tables = _others_11()
    tables.update(
        {
            t.entity: t
            for t in (
                _shape_only("categories", "sourcedId,status,dateLastModified,title,weight", ("title",)),
                _shape_only(
                    "lineItems",
                    "sourcedId,status,dateLastModified,title,description,assignDate,dueDate,classSourcedId,"
                    "categorySourcedId,academicSessionSourcedId,resultValueMin,resultValueMax,schoolSourcedId",
                ),
                _shape_only(
                    "results",
                    "sourcedId,status,dateLastModified,lineItemSourcedId,studentSourcedId,scoreStatus,score,"
                    "scoreDate,comment,textScore,classSourcedId,inProgress,incomplete,late,missing",
                ),
                _shape_only(
                    "scoreScales",
                    "sourcedId,status,dateLastModified,title,type,orgSourcedId,courseSourcedId,classSourcedId,"
                    "scoreScaleValue",
                ),
                _shape_only(
                    "lineItemLearningObjectiveIds",
                    "sourcedId,status,dateLastModified,lineItemSourcedId,source,learningObjectiveId",
                ),
                _shape_only(
                    "lineItemScoreScales",
                    "sourcedId,status,dateLastModified,title,lineItemSourcedId,scoreScaleSourcedId",
                ),
                _shape_only(
                    "resultLearningObjectiveIds",
                    "sourcedId,status,dateLastModified,resultSourcedId,source,learningObjectiveId,score,textScore",
                ),
                _shape_only(
                    "resultScoreScales",
                    "sourcedId,status,dateLastModified,title,resultSourcedId,scoreScaleSourcedId",
                ),
                _shape_only(
                    "userResources",
                    "sourcedId,status,dateLastModified,userSourcedId,orgSourcedId,classSourcedId,resourceSourcedId",
                ),
            )
        }
    )
    return tables


def _build(v12: bool) -> dict[str, Table]:
    tables = _rostering(v12)
    tables["users"] = _users_12() if v12 else _users_11()
    if v12:
        tables.update(_roles_12())
    tables.update(_others_12() if v12 else _others_11())
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
