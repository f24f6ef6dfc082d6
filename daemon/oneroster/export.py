"""Snapshot frames back out as a OneRoster CSV package (zip) that rosterd's strict validation accepts.

    package_bytes(frames, "1.2")                                                    the roster, bulk
    package_bytes(upserts, "1.1", mode="delta", deleted={"users": ids}, modified_at=when)   its changes

Licence targets push these zips to vendors. The generator (daemon/generator/generate.py) writes its packages with the same
file helpers: to_csv_bytes, manifest_bytes, zip_bytes. Same input, same bytes: rows sorted by sourcedId,
files in the version's order, fixed zip timestamps (a delta also needs a fixed `modified_at`).

Values are written as OneRoster text: lists comma-joined (the cell quoted when it holds a comma), dates
YYYY-MM-DD, date-times YYYY-MM-DDTHH:MM:SS.sssZ in UTC, booleans true/false, years in four digits. Columns
come in the version's order, then the frame's `metadata.*` columns by name; any other column is dropped. An
entity without rows is declared absent: OneRoster forbids header-only files.

Bulk: status and dateLastModified are blank. Delta: every row of `frames` is `active` and every sourcedId of
`deleted` a `tobedeleted` row, all stamped with `modified_at` (default: now, UTC). A tobedeleted row needs
its required fields like any other. Given as sourcedIds, the required fields are filled with placeholders
that pass validation: the row's sourcedId for text and references, the first token of a vocabulary,
`false`, the stamp's date and year. Given as rows (a frame such as ChangeSet.deleted), the rows' own values
are sent and converted like the upserts: better for a receiver that reads more than the sourcedId.

Versions: the frames' layout is read from their columns, so a snapshot of either version goes to either.

1.1 -> 1.2
- users.role and users.orgSourcedIds become roles.csv, unless the frames hold roles. Each org of the user
  gets one role, in list order, with the sourcedId `<user>.role.<n>`. The first is `primary`, the others
  `secondary`. `administrator` is not a 1.2 role: it becomes `districtAdministrator` at a district, local,
  state or national org, and `siteAdministrator` at any other org or when orgs are not among the frames.
  users.primaryOrgSourcedId is the first org.
- lineItems.gradingPeriodSourcedId is renamed academicSessionSourcedId.
- Every other column is the same in both versions (academicSessions.schoolYear, courses.schoolYearSourcedId,
  classes.termSourcedIds, grades, userIds, agentSourcedIds, ...). Columns new in 1.2 stay blank.
- Nothing is lost: going back to 1.1 gives the same users (an org repeated in orgSourcedIds comes back once).

1.2 -> 1.1
- users.orgSourcedIds: the primaryOrgSourcedId, then the orgs of the user's roles. users.role: the role of
  the user's first role that 1.1 can say. Roles are taken primary before secondary, the one at the primary
  org first, then by sourcedId. districtAdministrator, siteAdministrator, systemAdministrator, principal and
  counselor become `administrator`. A user with no such role takes the role of their first enrollment.
- A user left without a role or an org cannot be written (ExportError). A delta must therefore bring the
  roles of the users it holds.
- lineItems.academicSessionSourcedId is renamed gradingPeriodSourcedId.
- Vocabularies: a token 1.1 lacks (sex `unspecified` or `other`, any `ext:`) is left blank in an optional
  column, and left out of a list (resources.roles). In a required column (an org, session or enrollment
  type or role, a classType) it is an ExportError. grades keep only CEDS codes (`9` is written `09`); other
  items are dropped.
- Lost: every role but one per user (their orgs stay in orgSourcedIds), the roles' dates, types and
  profile links; userProfiles.csv; users.userMasterIdentifier, the preferred names and pronouns; and the
  1.2-only gradebook and resource files and columns (scoreScales, learning objectives, results.textScore, ...).

A delta sent across versions converts only what it holds. To 1.2, deleted users must be given as rows (with
orgSourcedIds) for their derived roles to be deleted too, and a user who drops an org keeps the old derived
role. To 1.1, roles sent without their user change nothing.

ExportError, before anything is written: a line break in any value; a list item that is empty, holds a
comma, or starts or ends with a space (the CSV binding cannot say these); a missing or repeated sourcedId
(in a delta, a row both upserted and deleted). A sourcedId that lenient validation let through but strict
validation refuses is written as it is, and so is a derived role id longer than 255 characters.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal

import polars as pl

from daemon.files import write_whole
from daemon.oneroster import schema
from daemon.oneroster.rows import EXT_TOKEN
from daemon.oneroster.schema import CEDS_GRADES, ENROLLMENT_ROLES, USER_ROLES_11, Kind, Table

Frame = pl.DataFrame | pl.LazyFrame
Deleted = Mapping[str, Sequence[str] | pl.Series | Frame]

ZIP_TIME = (2026, 1, 1, 0, 0, 0)  # fixed entry timestamps keep zips byte-identical between runs
MODES = ("absent", "bulk", "delta")
SOURCE = ("rosterd", "rosterd")  # the manifest's source.systemName and source.systemCode
DATETIME_TEXT = "%Y-%m-%dT%H:%M:%S%.3fZ"
LIST_KINDS = frozenset({Kind.REF_LIST, Kind.LIST, Kind.GRADES, Kind.USER_IDS, Kind.ENUM_LIST, Kind.PAIRS})
LIFECYCLE_KINDS = frozenset({Kind.STATUS, Kind.MODIFIED})
WIDE_ORGS = ("district", "local", "state", "national")  # where a 1.1 administrator is a district one
ROLES_TO_11 = {
    **{role: role for role in USER_ROLES_11},
    **dict.fromkeys(("districtAdministrator", "siteAdministrator", "systemAdministrator", "principal",
                     "counselor"), "administrator"),
}  # fmt: skip
RENAMES = {  # target version -> entity -> {other version's column: this version's}
    "1.1": {"lineItems": {"academicSessionSourcedId": "gradingPeriodSourcedId"}},
    "1.2": {"lineItems": {"gradingPeriodSourcedId": "academicSessionSourcedId"}},
}
KINDS = {(t.entity, c.name): c.kind for v in schema.VERSIONS.values() for t in v.tables.values() for c in t.columns}
_ROW = "_row"  # the validator's row numbers, kept by some frames


class ExportError(ValueError):
    """The frames hold something no valid package of the version can say."""


# --- the package ------------------------------------------------------------------------------------------


def package_bytes(
    frames: Mapping[str, Frame], version: Literal["1.1", "1.2"], *, mode: Literal["bulk", "delta"] = "bulk",
    deleted: Deleted | None = None, modified_at: datetime | None = None,
) -> bytes:  # fmt: skip
    """The zip: manifest.csv (every file of the version: `mode` or absent) and one CSV per entity with rows."""
    tables = package_tables(frames, version, mode=mode, deleted=deleted, modified_at=modified_at)
    entries = {schema.MANIFEST_FILE: manifest_bytes(version, dict.fromkeys(tables, mode))}
    entries.update((f"{entity}.csv", to_csv_bytes(frame)) for entity, frame in tables.items())
    return zip_bytes(entries)


def write_package(path: str | Path, frames: Mapping[str, Frame], version: Literal["1.1", "1.2"], **options) -> None:
    """package_bytes(frames, version, **options) written to `path` whole or not at all: a temporary file
    beside it (mode 0600: rosters are personal data), fsynced, renamed over `path`, the folder fsynced."""
    write_whole(Path(path), package_bytes(frames, version, **options), mode=0o600, sync_dir=True)


def package_tables(
    frames: Mapping[str, Frame], version: str, *, mode: str = "bulk", deleted: Deleted | None = None,
    modified_at: datetime | None = None,
) -> dict[str, pl.DataFrame]:  # fmt: skip
    """Each file of the package as a frame of text (blank = null), by entity in the version's order."""
    if version not in schema.VERSIONS:
        raise ValueError(f"version must be one of {sorted(schema.VERSIONS)}, not {version!r}")
    if mode not in ("bulk", "delta"):
        raise ValueError(f"mode must be bulk or delta, not {mode!r}")
    if deleted and mode != "delta":
        raise ValueError("only a delta can delete rows: pass mode='delta' with `deleted`")
    stamp = _utc(modified_at)
    stamp_text = stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
    kept = convert(_load(frames), version)
    gone = convert(_load(_deleted_frames(deleted or {})), version, complete=False)
    out = {}
    for entity, table in schema.VERSIONS[version].tables.items():
        parts = []
        if entity in kept:
            status = "active" if mode == "delta" else None
            parts.append(_lifecycle(_text(kept[entity], table), status, stamp_text if status else None))
        if entity in gone:
            parts.append(_lifecycle(_placeholders(_text(gone[entity], table), table, stamp), "tobedeleted", stamp_text))
        frame = pl.concat(parts, how="diagonal") if parts else None
        if frame is None or frame.height == 0:
            continue
        _check_keys(frame, table)
        extensions = sorted(c for c in frame.columns if c.startswith("metadata."))
        out[entity] = frame.select(*table.names, *extensions).sort("sourcedId")
    return out


def _utc(moment: datetime | None) -> datetime:
    if moment is None:
        return datetime.now(UTC)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _load(frames: Mapping[str, Frame]) -> dict[str, pl.DataFrame]:
    """Eager frames without `_row`; list columns given as comma text (generator tables) split into lists."""
    known = {entity for v in schema.VERSIONS.values() for entity in v.tables}
    loaded = {}
    for entity, frame in frames.items():
        if entity not in known:
            raise ExportError(f"{entity} is not a OneRoster 1.1 or 1.2 entity")
        frame = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
        frame = frame.drop(_ROW, strict=False)
        split = [name for name, dtype in frame.schema.items()
                 if dtype == pl.String and KINDS.get((entity, name)) in LIST_KINDS]  # fmt: skip
        loaded[entity] = frame.with_columns(
            pl.when(pl.col(name).str.len_bytes() > 0).then(pl.col(name).str.split(",")).alias(name) for name in split
        )
    return loaded


def _deleted_frames(deleted: Deleted) -> dict[str, Frame]:
    """Deleted rows as frames: given rows as they are, bare sourcedIds as a one-column frame."""
    frames: dict[str, Frame] = {}
    for entity, value in deleted.items():
        if isinstance(value, pl.DataFrame | pl.LazyFrame):
            frames[entity] = value
        elif isinstance(value, pl.Series):
            frames[entity] = value.cast(pl.String).alias("sourcedId").to_frame()
        else:
            frames[entity] = pl.DataFrame({"sourcedId": list(value)}, schema={"sourcedId": pl.String})
    return frames


# --- version conversion -----------------------------------------------------------------------------------


def convert(frames: Mapping[str, pl.DataFrame], version: str, *, complete: bool = True) -> dict[str, pl.DataFrame]:
    """The frames in the version's layout (typed; columns the version lacks are left for the writer to drop).

    `complete`: the rows must be fully writable (upserts, bulk). Deleted rows are not: what cannot be
    worked out for them is left blank, and a placeholder fills it."""
    frames = dict(frames)
    users = frames.get("users")
    if users is not None:
        layout_11 = "orgSourcedIds" in users.columns
        if version == "1.2" and layout_11:
            if "roles" not in frames:
                frames["roles"] = _roles_from_users(users, frames.get("orgs"))
            home = pl.col("orgSourcedIds").list.first()
            if "primaryOrgSourcedId" in users.columns:
                home = pl.coalesce("primaryOrgSourcedId", home)
            frames["users"] = users.with_columns(home.alias("primaryOrgSourcedId"))
        elif version == "1.1" and not layout_11:
            frames["users"] = _users_from_roles(users, frames.get("roles"), frames.get("enrollments"), complete)
    for entity, names in RENAMES[version].items():
        if entity in frames:
            present = frames[entity].columns
            renames = {old: new for old, new in names.items() if old in present and new not in present}
            frames[entity] = frames[entity].rename(renames)
    target = schema.VERSIONS[version]
    return {entity: _fit(frame, target.tables[entity], target.extensible, complete)
            for entity, frame in frames.items() if entity in target.tables}  # fmt: skip


def _has(frame: pl.DataFrame | None, *names: str) -> bool:
    return frame is not None and set(names) <= set(frame.columns)


def _roles_from_users(users: pl.DataFrame, orgs: pl.DataFrame | None) -> pl.DataFrame:
    """1.2 roles from 1.1 users: one per org of the user, the first primary."""
    frame = users.select(
        userSourcedId="sourcedId",
        role=pl.col("role") if "role" in users.columns else pl.lit(None, pl.String),
        orgSourcedId=pl.col("orgSourcedIds").list.unique(maintain_order=True),
    )
    frame = frame.with_columns(n=pl.int_ranges(1, pl.col("orgSourcedId").list.len() + 1)).explode("orgSourcedId", "n")
    frame = frame.filter(pl.col("orgSourcedId").is_not_null())
    if _has(orgs, "sourcedId", "type"):
        types = orgs.select(orgSourcedId="sourcedId", org_type="type").unique("orgSourcedId", keep="first")
        frame = frame.join(types, on="orgSourcedId", how="left", maintain_order="left")
    else:
        frame = frame.with_columns(org_type=pl.lit(None, pl.String))
    admin = pl.when(pl.col("org_type").is_in(WIDE_ORGS)).then(pl.lit("districtAdministrator"))
    return frame.select(
        sourcedId=pl.format("{}.role.{}", "userSourcedId", "n"),
        userSourcedId="userSourcedId",
        roleType=pl.when(pl.col("n") == 1).then(pl.lit("primary")).otherwise(pl.lit("secondary")),
        role=pl.when(pl.col("role") == "administrator").then(admin.otherwise(pl.lit("siteAdministrator")))
        .otherwise("role"),
        orgSourcedId="orgSourcedId",
    )


def _users_from_roles(
    users: pl.DataFrame, roles: pl.DataFrame | None, enrollments: pl.DataFrame | None, complete: bool
) -> pl.DataFrame:
    """1.1 users from 1.2 users and roles: orgSourcedIds and role, ranked as the module docstring says."""
    home = pl.col("primaryOrgSourcedId") if "primaryOrgSourcedId" in users.columns else pl.lit(None, pl.String)
    people = users.select(user="sourcedId", home=home)
    blank = pl.lit(None, pl.String)
    parts = [people.select("user", org="home", role=blank, rank=pl.lit(0, pl.Int32), sid=pl.lit(""))]
    if _has(roles, "sourcedId", "userSourcedId", "orgSourcedId", "role"):
        secondary = (pl.col("roleType") != "primary") if "roleType" in roles.columns else pl.lit(True)
        elsewhere = pl.col("orgSourcedId") != pl.col("home")
        rank = 1 + 2 * secondary.fill_null(True).cast(pl.Int32) + elsewhere.fill_null(True).cast(pl.Int32)
        held = roles.join(people, left_on="userSourcedId", right_on="user", how="inner")
        parts.append(held.select(
            user="userSourcedId", org="orgSourcedId", rank=rank.cast(pl.Int32), sid="sourcedId",
            role=pl.col("role").replace_strict(ROLES_TO_11, default=None, return_dtype=pl.String),
        ).select("user", "org", "role", "rank", "sid"))  # fmt: skip
    if _has(enrollments, "sourcedId", "userSourcedId", "role"):
        taught = enrollments.join(people, left_on="userSourcedId", right_on="user", how="semi")
        parts.append(taught.filter(pl.col("role").is_in(ENROLLMENT_ROLES)).select(
            user="userSourcedId", org=blank, role="role", rank=pl.lit(10, pl.Int32), sid="sourcedId"))  # fmt: skip
    found = (
        pl.concat(parts).sort("user", "rank", "sid")
        .group_by("user", maintain_order=True)
        .agg(orgSourcedIds=pl.col("org").drop_nulls().unique(maintain_order=True),
             role=pl.col("role").drop_nulls().first())
        .rename({"user": "sourcedId"})
    )  # fmt: skip
    if "role" in users.columns:
        found = found.drop("role")
    users = users.join(found, on="sourcedId", how="left", maintain_order="left")
    missing = users.filter(pl.col("role").is_null() | (pl.col("orgSourcedIds").list.len().fill_null(0) == 0))
    if complete and missing.height:
        shown = ", ".join(missing["sourcedId"].head(3).to_list())
        raise ExportError(f"users.csv (1.1) needs a role and an org for every user; {missing.height} users have "
                          f"no role or org that 1.1 can say ({shown}): export them with their roles")  # fmt: skip
    return users


def _fit(frame: pl.DataFrame, table: Table, extensible: bool, complete: bool) -> pl.DataFrame:
    """Vocabulary values the version lacks blanked (an error in a required column of complete rows); in 1.1,
    grades cut down to CEDS codes."""
    fixes = []
    for col in table.columns:
        if col.name not in frame.columns:
            continue
        c, dtype = pl.col(col.name), frame.schema[col.name]
        if col.kind is Kind.ENUM and dtype == pl.String:
            ok = c.is_in(col.vocabulary)
            if col.extensible and extensible:
                ok = ok | c.str.contains(EXT_TOKEN)
            bad = frame.select(c.is_not_null() & ~ok).to_series()
            if not bad.any():
                continue
            if col.required and complete:
                example = frame.filter(bad).row(0, named=True)
                raise ExportError(f"{table.file}: {col.name} {example[col.name]!r} (sourcedId "
                                  f"{example['sourcedId']!r}) is not a value this OneRoster version has")  # fmt: skip
            fixes.append(pl.when(ok).then(c).alias(col.name))
        elif col.kind is Kind.ENUM_LIST and isinstance(dtype, pl.List):
            item = pl.element().is_in(col.vocabulary)
            if col.extensible and extensible:
                item = item | pl.element().str.contains(EXT_TOKEN)
            fixes.append(c.list.eval(pl.element().filter(item)))
        elif col.kind is Kind.GRADES and not extensible and isinstance(dtype, pl.List):
            padded = pl.when(pl.element().str.contains(r"^[1-9]$")).then("0" + pl.element()).otherwise(pl.element())
            fixes.append(c.list.eval(padded).list.eval(pl.element().filter(pl.element().is_in(CEDS_GRADES))))
    return frame.with_columns(fixes) if fixes else frame


# --- text ----------------------------------------------------------------------------------------------------


def _text(frame: pl.DataFrame, table: Table) -> pl.DataFrame:
    """The table's columns (blank where the frame lacks one) and the frame's metadata.* columns, as text."""
    extensions = sorted(c for c in frame.columns if c.startswith("metadata."))
    written = [name for name in (*table.names, *extensions) if name in frame.columns]
    _check_writable(frame.select(written), table)
    kinds = {c.name: c.kind for c in table.columns}
    return frame.select(
        _cell(pl.col(name), frame.schema[name], kinds.get(name)).alias(name) if name in frame.columns
        else pl.lit(None, pl.String).alias(name)
        for name in (*table.names, *extensions)
    )  # fmt: skip


def _cell(expr: pl.Expr, dtype: pl.DataType, kind: Kind | None) -> pl.Expr:
    if isinstance(dtype, pl.List):
        return expr.list.eval(pl.element().cast(pl.String)).list.join(",")
    if isinstance(dtype, pl.Datetime):
        utc = expr.dt.convert_time_zone("UTC") if dtype.time_zone else expr.dt.replace_time_zone("UTC")
        return utc.dt.strftime(DATETIME_TEXT)
    if dtype == pl.Date:
        return expr.dt.strftime("%Y-%m-%d")
    if dtype == pl.Boolean:
        return pl.when(expr).then(pl.lit("true")).when(expr.not_()).then(pl.lit("false"))
    text = expr.cast(pl.String)
    return text.str.zfill(4) if kind is Kind.YEAR and dtype.is_integer() else text


def _check_writable(frame: pl.DataFrame, table: Table) -> None:
    """ExportError for a value OneRoster CSV cannot hold: a line break, or a list item that would not come
    back as itself (empty, holding a comma, with spaces around it)."""
    checks = {}
    for name, dtype in frame.schema.items():
        if dtype == pl.String:
            checks[name] = (pl.col(name).str.contains("[\r\n]"), "holds a line break")
        elif isinstance(dtype, pl.List):
            item = pl.element().cast(pl.String)
            bad = pl.col(name).list.eval(item.str.contains(r"^$|^\s|\s$|[,\r\n]")).list.any()
            checks[name] = (bad, "has a list item that is empty, holds a comma or starts or ends with a space")
    if not checks:
        return
    hits = frame.select(expr.fill_null(False).any().alias(name) for name, (expr, _) in checks.items()).row(0)
    for (name, (expr, problem)), hit in zip(checks.items(), hits, strict=True):
        if hit:
            where = frame.with_columns(_bad=expr).filter(pl.col("_bad"))
            sid = where["sourcedId"][0] if "sourcedId" in where.columns else None
            raise ExportError(f"{table.file}: {name} of sourcedId {sid!r} {problem}; OneRoster CSV cannot say that")


def _lifecycle(frame: pl.DataFrame, status: str | None, stamp: str | None) -> pl.DataFrame:
    return frame.with_columns(status=pl.lit(status, pl.String), dateLastModified=pl.lit(stamp, pl.String))


def _placeholders(frame: pl.DataFrame, table: Table, stamp: datetime) -> pl.DataFrame:
    """Deleted rows with every blank required field filled with a value that passes validation."""
    fills = []
    for col in table.columns:
        if not col.required or col.kind in LIFECYCLE_KINDS:
            continue
        if col.kind is Kind.ENUM:
            value = pl.lit(col.vocabulary[0])
        elif col.kind is Kind.BOOL:
            value = pl.lit("false")
        elif col.kind is Kind.DATE:
            value = pl.lit(stamp.strftime("%Y-%m-%d"))
        elif col.kind is Kind.YEAR:
            value = pl.lit(f"{stamp.year:04d}")
        else:  # sourcedIds, references, names: the row's own sourcedId has a valid form for all of them
            value = pl.col("sourcedId")
        c = pl.col(col.name)
        fills.append(pl.when(c.is_null() | (c == "")).then(value).otherwise(c).alias(col.name))
    return frame.with_columns(fills)


def _check_keys(frame: pl.DataFrame, table: Table) -> None:
    ids = frame["sourcedId"]
    if (ids.is_null() | (ids == "")).any():
        raise ExportError(f"{table.file}: a row has no sourcedId")
    repeated = ids.is_duplicated()
    if repeated.any():
        raise ExportError(f"{table.file}: sourcedId {ids.filter(repeated)[0]!r} is on more than one row "
                          "(in a delta: both upserted and deleted?)")  # fmt: skip


# --- files (shared with the generator) ----------------------------------------------------------------------


def to_csv_bytes(frame: pl.DataFrame) -> bytes:
    """UTF-8, LF line ends, a header row; a field is quoted only when it must be. Blanks are written bare."""
    buffer = io.BytesIO()
    frame.with_columns(pl.col(pl.String).replace("", None)).write_csv(buffer)
    return buffer.getvalue()


def manifest_bytes(version: str, modes: Mapping[str, str], source: tuple[str, str] = SOURCE) -> bytes:
    """manifest.csv naming every data file of the version: its mode from `modes`, otherwise absent; then
    source.systemName and source.systemCode."""
    tables = schema.VERSIONS[version].tables
    unknown = set(modes) - set(tables)
    if unknown:
        raise ValueError(f"not OneRoster {version} files: {sorted(unknown)}")
    bad = {m for m in modes.values() if m not in MODES}
    if bad:
        raise ValueError(f"file modes must be one of {MODES}, not {sorted(bad)}")
    rows = [("manifest.version", "1.0"), ("oneroster.version", version)]
    rows += [(f"file.{entity}", modes.get(entity, "absent")) for entity in tables]
    rows += [("source.systemName", source[0]), ("source.systemCode", source[1])]
    return "".join(f"{name},{value}\n" for name, value in [("propertyName", "value"), *rows]).encode()


def write_entries(target: str | Path | BinaryIO, entries: Iterable[tuple[str, bytes]]) -> None:
    """A deflated zip of (name, content) entries at its root, with fixed timestamps and attributes."""
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, whatever the host, so the bytes do not depend on it
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)


def zip_bytes(entries: Mapping[str, bytes]) -> bytes:
    """A deflated zip of `entries` (name -> content) with fixed timestamps: same entries, same bytes."""
    buffer = io.BytesIO()
    write_entries(buffer, entries.items())
    return buffer.getvalue()
