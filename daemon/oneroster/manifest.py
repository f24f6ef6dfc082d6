"""manifest.csv: the package's version and the mode (absent, bulk, delta) of every file."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from daemon.oneroster.findings import Findings, Mode, Severity
from daemon.oneroster.schema import MANIFEST_FILE, MANIFEST_VERSIONS, V11, V12, Version
from daemon.oneroster.text import read_table

FILE_MODES = ("absent", "bulk", "delta")
SOURCE_PROPERTIES = ("source.systemName", "source.systemCode")


@dataclass(slots=True)
class Manifest:
    version: Version | None  # None when oneroster.version is missing or unsupported
    version_label: str | None  # as written: 1.1, 1.2 or 1.2.1
    modes: dict[str, str] = field(default_factory=dict)  # entity -> absent | bulk | delta, as declared
    properties: dict[str, str] = field(default_factory=dict)


def read_manifest(data: bytes, findings: Findings, mode: Mode) -> Manifest:
    raw = read_table(data, MANIFEST_FILE, findings, mode, width_code="manifest.row_width_mismatch", scope="file")
    if raw is None:
        return Manifest(None, None)

    def report(code: str, severity: Severity, message: str, row: int | None = None, value: str | None = None):
        findings.add(code, severity, f"manifest.csv: {message}", file=MANIFEST_FILE, row=row, value=value,
                     scope="file")  # fmt: skip

    header = raw.header
    if header != ["propertyName", "value"]:
        lenient_ok = [h.lower() for h in header] == ["propertyname", "value"]
        severity = mode.deviation() if lenient_ok else Severity.ERROR
        report("manifest.invalid_header", severity, "the header must be 'propertyName,value'", 1, ",".join(header))
        if len(header) != 2:
            return Manifest(None, None)

    properties: dict[str, str] = {}
    rows: dict[str, int] = {}
    for name, value, row in raw.frame.select(pl.col("c0").fill_null(""), pl.col("c1").fill_null(""), "_row").iter_rows():
        if name in properties:
            report("manifest.duplicate_property", Severity.ERROR, f"'{name}' appears twice (rows {rows[name]} and {row})",
                   row, name)  # fmt: skip
            continue
        properties[name] = value
        rows[name] = row

    version_label = properties.get("oneroster.version")
    version = _check_versions(properties, rows, report, mode)
    known = (version or V12).tables  # an unknown version: judge file.* names against the larger 1.2 set
    modes: dict[str, str] = {}
    for name, value in properties.items():
        if name.startswith("file."):
            entity = name[len("file.") :]
            if entity not in known:
                report("manifest.unknown_property", mode.deviation(), f"'{name}' is not a file of this version",
                       rows[name], name)  # fmt: skip
                continue
            modes[entity] = _file_mode(name, value, rows[name], report, mode)
        elif name not in ("manifest.version", "oneroster.version", *SOURCE_PROPERTIES):
            report("manifest.unknown_property", mode.deviation(), f"unknown property '{name}'", rows[name], name)
    if version is not None:
        for entity in version.tables:
            if entity not in modes:
                report("manifest.missing_property", mode.deviation(), f"'file.{entity}' is missing")
    return Manifest(version, version_label, modes, properties)


def _check_versions(properties: dict[str, str], rows: dict[str, int], report, mode: Mode) -> Version | None:
    manifest_version = properties.get("manifest.version")
    if manifest_version is None:
        report("manifest.missing_property", Severity.ERROR, "'manifest.version' is missing")
    elif manifest_version != "1.0":
        # Excel turns 1.0 into 1: a known, harmless rewrite.
        severity = mode.deviation() if manifest_version in ("1", "1.00") else Severity.ERROR
        report("manifest.invalid_manifest_version", severity, "manifest.version must be 1.0 (was it opened in Excel?)",
               rows["manifest.version"], manifest_version)  # fmt: skip
    label = properties.get("oneroster.version")
    if label is None:
        report("manifest.missing_property", Severity.ERROR, "'oneroster.version' is missing")
        return None
    version = MANIFEST_VERSIONS.get(label)
    if version is None:
        report("manifest.unsupported_version", Severity.ERROR, "oneroster.version must be 1.1, 1.2 or 1.2.1",
               rows["oneroster.version"], label)  # fmt: skip
    return version


def _file_mode(name: str, value: str, row: int, report, mode: Mode) -> str:
    if value in FILE_MODES:
        return value
    if value.lower() in FILE_MODES:
        report("manifest.invalid_file_mode", mode.deviation(), f"'{name}' must be lower case: absent, bulk or delta",
               row, value)  # fmt: skip
        return value.lower()
    report("manifest.invalid_file_mode", Severity.ERROR, f"'{name}' must be absent, bulk or delta", row, value)
    return "invalid"


def guess_version(headers: dict[str, list[str]]) -> Version:
    """The likelier version of a package without a usable manifest, from its files and headers."""
    users = headers.get("users", [])
    if "roles" in headers or "primaryOrgSourcedId" in users or "userProfiles" in headers:
        return V12
    return V11
