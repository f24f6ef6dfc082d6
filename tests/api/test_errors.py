"""The status payload of daemon/targets/api/errors.py, checked against the shape the REST digest shows."""

from __future__ import annotations

import pytest

from daemon.targets.api import errors
from daemon.targets.api.errors import ApiError, status_payload, warning_payload


def test_the_failure_payload_is_spelled_as_the_spec_spells_it():
    assert status_payload("unknownobject", "No such user") == {
        "imsx_codeMajor": "failure",
        "imsx_severity": "error",
        "imsx_description": "No such user",
        "imsx_CodeMinor": {
            "imsx_codeMinorField": [
                {"imsx_codeMinorFieldName": "TargetEndSystem", "imsx_codeMinorFieldValue": "unknownobject"},
            ],
        },
    }


def test_an_ignored_selection_field_is_a_success_with_a_warning():
    assert warning_payload("invalid_selection_field", "unknown field 'nickname' in fields was ignored") == {
        "imsx_codeMajor": "success",
        "imsx_severity": "warning",
        "imsx_description": "unknown field 'nickname' in fields was ignored",
        "imsx_CodeMinor": {
            "imsx_codeMinorField": [
                {"imsx_codeMinorFieldName": "TargetEndSystem",
                 "imsx_codeMinorFieldValue": "invalid_selection_field"},
            ],
        },
    }


def test_an_api_error_carries_status_code_and_description_into_its_payload():
    error = ApiError(400, "invalid_sort_field", "cannot sort on 'shoeSize'")
    assert (error.status, error.minor, error.description) == (400, "invalid_sort_field", "cannot sort on 'shoeSize'")
    assert error.payload()["imsx_codeMajor"] == "failure"
    assert error.payload()["imsx_description"] == "cannot sort on 'shoeSize'"
    minor_field = error.payload()["imsx_CodeMinor"]["imsx_codeMinorField"][0]
    assert minor_field["imsx_codeMinorFieldValue"] == "invalid_sort_field"
    assert str(error) == "cannot sort on 'shoeSize'"


@pytest.mark.parametrize("minor", [
    "invalid_filter_field", "invalid_selection_field", "invalid_sort_field", "invaliddata",
    "unauthorisedrequest", "forbidden", "unknownobject", "server_busy",
])
def test_every_minor_code_of_the_spec_is_accepted(minor):
    assert ApiError(400, minor, "x").minor == minor


@pytest.mark.parametrize("minor", ["fullsuccess", "invalid_field", "InvalidData", ""])
def test_a_minor_code_outside_the_spec_is_a_programming_error(minor):
    with pytest.raises(ValueError):
        ApiError(400, minor, "x")


@pytest.mark.parametrize("status", [200, 204, 302, 418, 502])
def test_a_status_without_a_documented_payload_is_a_programming_error(status):
    with pytest.raises(ValueError):
        ApiError(status, "invaliddata", "x")


@pytest.mark.parametrize("make, status, minor", [
    (errors.unknown_object, 404, "unknownobject"),
    (errors.unauthorised, 401, "unauthorisedrequest"),
    (errors.forbidden, 403, "forbidden"),
    (errors.server_busy, 429, "server_busy"),
])
def test_the_shorthands_pair_each_status_with_its_minor_code(make, status, minor):
    error = make()
    assert (error.status, error.minor) == (status, minor)
    assert error.description


def test_a_bad_query_is_a_400():
    error = errors.bad_query("invaliddata", "limit must be a whole number of at least 1")
    assert (error.status, error.minor) == (400, "invaliddata")
