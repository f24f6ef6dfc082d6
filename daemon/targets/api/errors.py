"""The OneRoster status payload (imsx_StatusInfo) and the one exception every refusal is raised as.

A refusal carries its HTTP status, one of the spec's minor codes and a description written for the vendor:
it names the parameter or field at fault and never anything inside rosterd (SQL, paths, tracebacks), because
whatever is in the description is sent. Handlers raise `ApiError`; the edge turns it into the response with
`error.payload()`.

The spec also lets a successful response carry a warning (codeMajor success, severity warning), which is how
an ignored unknown `fields` entry is reported when a caller chooses to ignore rather than refuse it:
`warning_payload`.
"""

from __future__ import annotations

from typing import Any

# The minor codes a refusal may carry (fullsuccess is the code of a success, never of an ApiError).
MINOR_CODES = frozenset({
    "invalid_filter_field",
    "invalid_selection_field",
    "invalid_sort_field",
    "invaliddata",
    "unauthorisedrequest",
    "forbidden",
    "unknownobject",
    "server_busy",
})

# The HTTP statuses the rostering service documents a status payload for, and 405 for a method it does not take.
STATUSES = frozenset({400, 401, 403, 404, 405, 422, 429, 500})  # 405: a method other than GET


class ApiError(Exception):
    """A request refused with `status`, the spec's `minor` code and a `description` safe to send."""

    def __init__(self, status: int, minor: str, description: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"no status payload is documented for HTTP {status}")
        if minor not in MINOR_CODES:
            raise ValueError(f"unknown minor code {minor!r}")
        super().__init__(description)
        self.status = status
        self.minor = minor
        self.description = description

    def payload(self) -> dict[str, Any]:
        return status_payload(self.minor, self.description)

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.minor!r}, {self.description!r})"


def status_payload(minor: str, description: str, *, major: str = "failure", severity: str = "error") -> dict[str, Any]:
    """The status record as the spec's JSON binding spells it, with the minor code under TargetEndSystem."""
    return {
        "imsx_codeMajor": major,
        "imsx_severity": severity,
        "imsx_description": description,
        "imsx_CodeMinor": {
            "imsx_codeMinorField": [
                {"imsx_codeMinorFieldName": "TargetEndSystem", "imsx_codeMinorFieldValue": minor},
            ],
        },
    }


def warning_payload(minor: str, description: str) -> dict[str, Any]:
    """A success that still says what was not honoured, such as an unknown name in `fields` left out."""
    return status_payload(minor, description, major="success", severity="warning")


def bad_query(minor: str, description: str) -> ApiError:
    return ApiError(400, minor, description)


def unknown_object(description: str = "No such object") -> ApiError:
    return ApiError(404, "unknownobject", description)


def unauthorised(description: str = "A valid bearer token is required") -> ApiError:
    return ApiError(401, "unauthorisedrequest", description)


def forbidden(description: str = "The token's scopes do not cover this request") -> ApiError:
    return ApiError(403, "forbidden", description)


def server_busy(description: str = "Too many requests; retry later") -> ApiError:
    return ApiError(429, "server_busy", description)
