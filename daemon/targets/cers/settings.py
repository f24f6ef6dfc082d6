"""A CERS target's settings: where to send, how to log in, and how a roster maps onto student groups.

Each is a `[[tenants.targets]]` table with `type = "cers"` in the TOML; config/rosterd.example.toml
documents every key. The secret key is never written in the TOML: it is read at the time of use from a
systemd credential, an environment variable or a file (exactly one of them is named).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from daemon.names import check_target_name
from daemon.targets.secrets import SecretMissing, SecretSource

__all__ = ["CersTarget", "CognitoSettings", "CersMapping", "CersFilters", "SecretMissing"]

DEFAULT_IMPORTS_URL = "https://groups.import.smarterbalanced.org/groups/imports/"
MAX_STUDENTS_PER_GROUP = 200  # CERS rejects a larger group
MAX_ROWS_PER_FILE = 200_000  # CERS's current per-file limit
_SOURCE = re.compile(r"^(identifier|sourcedId|username|email|metadata\.[A-Za-z0-9_.-]+|userIds:[^{}:,]+)$")
_SCHOOL_SOURCE = re.compile(r"^(identifier|sourcedId|metadata\.[A-Za-z0-9_.-]+)$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CognitoSettings(SecretSource):
    """AWS Cognito InitiateAuth (USER_PASSWORD_AUTH), as CERS's vendor document describes. The secret key
    comes from secret_credential, secret_env or secret_file (not needed in dry-run mode)."""

    region: str = "us-west-2"
    client_id: str = ""
    username: str = ""
    endpoint_url: str | None = None  # default https://cognito-idp.<region>.amazonaws.com/
    token: Literal["id", "access"] = "id"  # which token goes into Authorization: Bearer
    refresh_margin_seconds: int = Field(300, ge=0)  # refresh this long before the token expires

    @property
    def configured(self) -> bool:
        return bool(self.client_id and self.username and self.secret_source)

    @property
    def url(self) -> str:
        return self.endpoint_url or f"https://cognito-idp.{self.region}.amazonaws.com/"


class CersFilters(_Section):
    """Which classes become groups; an empty list does not filter."""

    class_types: list[str] = []  # e.g. ["scheduled"]
    grades: list[str] = []  # a class is kept when any of its grades is listed
    include_courses: list[str] = []  # course sourcedId or courseCode
    exclude_courses: list[str] = []
    include_subjects: list[str] = []  # the CERS subject a class maps to (Math, ELA, All) or a SCED title/code
    exclude_subjects: list[str] = []
    schools: list[str] = []  # school sourcedId or identifier


class CersMapping(_Section):
    """How OneRoster fields become the six columns of the CERS group file."""

    school_id: str = "identifier"  # orgs column: identifier (the 14-digit CDS code), sourcedId or metadata.*
    student_id: str = "identifier"  # users column: identifier, userIds:<type> (e.g. userIds:CA-SSID), metadata.*
    teacher_login: str = "email"  # users column: email or username (or another column as for student_id)
    teachers: Literal["all", "primary"] = "all"  # which teacher enrollments: all, or only primary="true"
    group_name: str = "{classCode}"  # a template over class columns; empty result falls back to sourcedId
    # SCED titles (class subjects, else course subjects) to CERS subject codes; compared case-insensitively.
    subjects: dict[str, str] = {"Mathematics": "Math", "English Language Arts": "ELA"}
    # SCED code prefixes (class subjectCodes, else course subjectCodes) to CERS subject codes.
    subject_codes: dict[str, str] = {"02": "Math", "01": "ELA"}
    default_subject: str = "All"  # when nothing maps, or a class maps to more than one subject
    oversize: Literal["skip", "split"] = "skip"  # a group of more than 200 students: skipped, or split _1, _2...

    @field_validator("school_id")
    @classmethod
    def _school_source(cls, value: str) -> str:
        if not _SCHOOL_SOURCE.match(value):
            raise ValueError(f"{value!r}: use identifier, sourcedId or metadata.<column>")
        return value

    @field_validator("student_id", "teacher_login")
    @classmethod
    def _user_source(cls, value: str) -> str:
        if not _SOURCE.match(value):
            raise ValueError(f"{value!r}: use identifier, email, username, sourcedId, userIds:<type> or metadata.<column>")
        return value

    @field_validator("group_name")
    @classmethod
    def _template(cls, value: str) -> str:
        if not re.search(r"\{[A-Za-z.]+\}", value):
            raise ValueError(f"{value!r}: the template names no class column, e.g. {{classCode}} or {{title}}")
        return value


class CersTarget(_Section):
    type: Literal["cers"]
    name: str = "cers"  # unique within the tenant; names the deliveries in `rosterd outbox`
    dry_run: bool = False  # write the files to results/cers/ instead of sending them
    imports_url: str = DEFAULT_IMPORTS_URL
    user_url: str | None = None  # default: /imports/user on the imports URL's host
    timeout_seconds: float = Field(300.0, gt=0)  # one POST, including CERS's synchronous validation
    max_rows_per_file: int = Field(MAX_ROWS_PER_FILE, ge=10, le=MAX_ROWS_PER_FILE)
    cognito: CognitoSettings = CognitoSettings()
    mapping: CersMapping = CersMapping()
    filters: CersFilters = CersFilters()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_target_name(value)

    @model_validator(mode="after")
    def _can_send(self) -> CersTarget:
        if not self.dry_run and not self.cognito.configured:
            raise ValueError(
                "a CERS target that sends (dry_run = false) needs cognito.client_id, cognito.username and one of "
                "cognito.secret_credential, secret_env or secret_file"
            )
        return self

    @property
    def user_endpoint(self) -> str:
        if self.user_url:
            return self.user_url
        from urllib.parse import urlsplit

        parts = urlsplit(self.imports_url)
        return f"{parts.scheme}://{parts.netloc}/imports/user"
