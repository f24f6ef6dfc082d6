"""The catalogue of finding codes, every one rosterd makes. Codes are stable: receipts, logs and scripts match
on them.

Each code has a one-line meaning; `rosterd codes` prints this table. Severity is not part of a code:
some deviations are warnings in lenient mode and errors in strict mode.
"""

CODES: dict[str, str] = {
    # The zip container
    "zip.empty_file": "the upload is an empty file (0 bytes)",
    "zip.not_a_zip": "the upload is not a zip archive",
    "zip.truncated": "the zip archive is cut short or its directory is damaged",
    "zip.too_many_entries": "the zip holds more entries than the configured limit",
    "zip.too_large": "the entries' total uncompressed size is over the configured limit",
    "zip.ratio_exceeded": "an entry's compression ratio is over the limit (a zip bomb)",
    "zip.unsafe_name": "an entry name is absolute or contains '..' (zip slip); the entry is ignored",
    "zip.symlink_entry": "an entry is a symbolic link; it is ignored",
    "zip.encrypted_entry": "an entry is encrypted; it cannot be read",
    "zip.unsupported_compression": "an entry uses a compression method rosterd cannot read",
    "zip.duplicate_entry": "two entries map to the same file name",
    "zip.nested_zip": "an entry is itself a zip archive; zip the CSV files, not a zip",
    "zip.corrupt_entry": "an entry could not be decompressed (bad data or checksum)",
    "zip.top_level_folder": "the CSV files sit inside one top-level folder instead of the zip root",
    "zip.misplaced_entry": "an entry sits in a folder other than the package folder; it is ignored",
    "zip.unknown_file": "a file that is not a OneRoster file of the package's version (not read)",
    "zip.file_name_case": "a file name differs from the OneRoster name only in letter case",
    "zip.ignored_entry": "an operating-system artefact (__MACOSX, .DS_Store, Thumbs.db) was ignored",
    # The package as a whole
    "package.missing_manifest": "manifest.csv is missing",
    "package.oneroster_1_0": "the package is OneRoster 1.0 (no manifest, 1.0 headers); export 1.1 or 1.2",
    "package.required_file_missing": "a file the ingestion needs is not in a bulk package",
    "package.no_changes": "the package is valid and holds only manifest.csv, which means nothing changed",
    # manifest.csv
    "manifest.invalid_header": "manifest.csv's header is not 'propertyName,value'",
    "manifest.row_width_mismatch": "a manifest row does not have exactly two cells",
    "manifest.duplicate_property": "a manifest property appears more than once",
    "manifest.unknown_property": "a manifest property that the version does not define",
    "manifest.missing_property": "a required manifest property is missing",
    "manifest.invalid_manifest_version": "manifest.version is not '1.0'",
    "manifest.unsupported_version": "oneroster.version is not 1.1, 1.2 or 1.2.1",
    "manifest.invalid_file_mode": "a file.* value is not absent, bulk or delta",
    "manifest.file_missing": "the manifest declares a file bulk or delta but the zip does not hold it",
    "manifest.file_unexpected": "the manifest declares a file absent but the zip holds it",
    "manifest.file_not_declared": "the zip holds a file the manifest does not mention",
    "manifest.too_large": "manifest.csv is implausibly large (over 1 MiB); it is not read",
    # Text and CSV syntax
    "csv.empty_file": "the file is empty: not even a header row",
    "csv.utf16": "the file is UTF-16 text; OneRoster files must be UTF-8",
    "csv.nul_byte": "the file holds NUL bytes; it is binary, not CSV text",
    "csv.invalid_utf8": "the row is not valid UTF-8 text",
    "csv.bare_carriage_return": "the row holds a carriage return that does not end a line",
    "csv.line_break_in_quoted_field": "a quoted field holds a line break, which OneRoster forbids",
    "csv.unescaped_quote": "a double quote inside a field is not escaped, or text follows a closing quote",
    "csv.line_too_long": "a line is longer than the limit (1 MiB); the file is not read",
    "csv.blank_line": "a blank line between data rows",
    "csv.no_data_rows": "the file has a header but no data rows",
    # Headers
    "header.missing_column": "a column the version defines is missing",
    "header.column_order": "the defined columns are not in the order the version gives",
    "header.column_case": "a header differs from the defined name only in letter case",
    "header.unknown_column": "an extra column that is not named metadata.* (an error among the defined columns)",
    "header.metadata_position": "a metadata.* column stands among the defined columns instead of after them",
    "header.duplicate_column": "a header name appears twice",
    "header.empty_column_name": "a header cell is empty",
    "header.legacy_column": "a column from an earlier revision of the version (ignored)",
    "header.unusable": "the header matches too little of the version's table to check rows",
    # Rows and values
    "row.width_mismatch": "the row has a different number of cells than the header",
    "row.missing_required_value": "a required value is blank",
    "row.invalid_sourced_id": "a sourcedId is too long or has characters outside 0-9 A-Z a-z . - _ / @",
    "row.invalid_date": "not a real calendar date in the form YYYY-MM-DD",
    "row.invalid_datetime": "not a date-time in the form YYYY-MM-DDTHH:MM:SS.sssZ (or a date, where one is allowed)",
    "row.invalid_year": "not a four-digit year",
    "row.invalid_float": "not a decimal number",
    "row.invalid_boolean": "not 'true' or 'false'",
    "row.invalid_enum": "not a value of the column's vocabulary",
    "row.invalid_list": "a comma list with an empty item or spaces around an item",
    "row.invalid_user_ids": "a userIds item is not of the form {type:id}",
    "row.invalid_score_scale_value": "a scoreScaleValue item is not of the form {lhs:rhs}",
    "row.invalid_case_id": "a CASE learning objective id (source case) is not of the form urn:uuid:<uuid>",
    "row.list_length_mismatch": "subjects and subjectCodes do not have the same number of items",
    "row.invalid_grade": "a grade is not a CEDS grade-level code (e.g. 09, KG)",
    "row.field_forbidden_in_bulk": "status or dateLastModified is filled in on a bulk row",
    "row.field_required_in_delta": "status or dateLastModified is blank on a delta row",
    "row.duplicate_sourced_id": "a sourcedId appears on more than one row of the file",
    "row.duplicate_identifier": "a value that must be unique (userMasterIdentifier) appears twice",
    "row.primary_not_teacher": "primary=true on an enrollment whose role is not teacher",
    "row.multiple_primary_roles": "a user has more than one primary role at one org",
    "row.date_order": "an end date is before the start date",
    "row.invalid_score_range": "a line item's resultValueMin is greater than its resultValueMax",
    # References between files
    "reference.missing_target_record": "a referenced sourcedId is not in the target file",
    "reference.missing_target_file": "a referenced file is absent from a bulk package",
    "reference.target_type_mismatch": "the referenced row has the wrong type (e.g. a class's school is not a school)",
    "reference.parent_cycle": "following a row's parents (parentSourcedId) leads round in a circle",
    "reference.target_dropped": "the referenced row was dropped, so this row is dropped too (an optional "
    "reference in lenient mode is cleared instead)",
    "reference.profile_user_mismatch": "a role's user profile belongs to another user",
    "reference.primary_org_without_role": "a user's primaryOrgSourcedId has no role for that user at that org",
    # Verdict
    "file.too_many_dropped_rows": "more rows were dropped than the configured share of the file allows",
    # Against the tenant's current snapshot (the daemon only)
    "snapshot.delta_without_baseline": "a package with delta files arrived before any accepted bulk upload",
    # A CERS target's groups (warnings in the delivery's result, about rows of the snapshot it sends)
    "cers.school_without_id": "a school has no CDS code (mapping.school_id, default identifier): its classes "
    "are not sent",
    "cers.class_without_school_year": "no term of a class gives a school year: the class is not sent",
    "cers.student_without_id": "an enrolled student has no SSID (mapping.student_id): left out of their groups",
    "cers.teacher_without_login": "an enrolled teacher has no login (mapping.teacher_login): left out of their "
    "groups",
    "cers.group_too_large": "a class has more than CERS's 200 students per group: skipped, or split (mapping.oversize)",
    "cers.group_name_collision": "two classes of one school and year clean to the same group name: each gets a "
    "hash suffix",
}


def describe(code: str) -> str:
    return CODES[code]
