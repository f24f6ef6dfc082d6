"""What an api target serves: a publication, made from each accepted snapshot in a worker process.

A publication is one folder per api target (STATE/targets/<tenant>/<target>/<upload_id>/, next to the views
licence targets keep) with, per served version, one Parquet file per stored collection (`1.2/users.parquet`):
- one row per record the vendor may see, in sourcedId order, in row groups of ROW_GROUP rows;
- `_json`: the record's JSON text as served, its hrefs starting with PLACEHOLDER (the server puts its own
  base URL there, so a publication does not depend on the host name a client used);
- `status`, `dateLastModified` and the record's other fields as typed columns (refs as their sourcedId,
  arrays as lists, dates as dates) for `filter` and `sort`, and `_roles`/`_orgs` on users for the
  relationship endpoints; `_digest` for the next publication's comparison.

Why this, and not a query engine over the snapshot at request time: a page in the default order is a slice of
the `_json` column, and Parquet's row groups let polars read only the groups that hold it, so a page costs the
same at offset 0 and at offset 2,800,000 and never reads the rest of the file; a filter or a sort reads only the
typed columns it names. The JSON is made once per snapshot, in bulk, off the event loop, rather than per page.

dateLastModified is rosterd's, not the SIS's: when a publication is made, a record whose JSON (without status and
dateLastModified) is the same as in the last publication keeps that publication's dateLastModified; any other
record gets the time this publication started. A record in the last publication and not in this one (it left the
roster or the vendor's scope) stays, with its last JSON, as `status: tobedeleted` and dateLastModified the
time it left, for `tobedeleted_days`, then goes. So `filter=dateLastModified>'T'` returns what changed after T,
deletions included. A held upload makes no publication (the outbox queues its deliveries only on approval), so
the API keeps serving the last accepted roster meanwhile.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from daemon.files import write_whole
from daemon.oneroster import schema
from daemon.oneroster.schema import Kind
from daemon.snapshots import storage
from daemon.snapshots.changes import SECRET_COLUMNS
from daemon.targets.api.shapes import COLLECTIONS, DATETIME_TEXT, RENAMED, UTC_MS, record_texts
from daemon.targets.scope import scoped_view
from daemon.targets.settings import Scope

PLACEHOLDER = "@base@"  # every href of a stored record starts with it: '"href":"@base@/orgs/x"'
HREF_MARK = '"href":"' + PLACEHOLDER
ROW_GROUP = 2000
META = "published.json"  # written last: a publication folder with it is complete
ACTIVE = ',"status":"active"'  # the second field of every record as record_texts writes it
CHUNK = 200_000  # rows turned into JSON at a time, to bound the worker's memory
LIFECYCLE_PATTERN = r',"status":"[a-z]+","dateLastModified":"[^"]*"'  # what a stored record has in its place
HIDDEN = ("_json", "_digest", "_roles", "_orgs")


def entity_file(folder: Path, version: str, entity: str) -> Path:
    return folder / version / f"{entity}.parquet"


def is_complete(folder: Path) -> bool:
    return (folder / META).is_file()


def publish_target(
    snapshot: str, previous: str | None, scope: dict, versions: list[str], tobedeleted_days: int, today: str,
    now: str, staging: str,
) -> dict:  # fmt: skip
    """In a worker process: the publication of `snapshot` for a target with `scope`, written to a fresh
    `staging` folder, following the `previous` publication (None: the first). Returns its summary: record
    counts per version and collection, how many changed and how many are tobedeleted."""
    moment = datetime.fromisoformat(now).astimezone(UTC).replace(microsecond=0)
    frames, _files = storage.scan_frames(Path(snapshot))
    view, _left_out = scoped_view(frames, Scope.model_validate(scope), datetime.fromisoformat(today).date())
    view = {e: f.drop([c for c in SECRET_COLUMNS if c in f.columns]) for e, f in view.items()}
    out = Path(staging)
    storage.clear(out)
    before = Path(previous) if previous else None
    summary: dict = {"published_at": moment.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "polars": pl.__version__, "versions": {}}
    for version in versions:
        (out / version).mkdir(parents=True)
        counts = summary["versions"][version] = {}
        for entity in COLLECTIONS:
            if entity not in view:
                continue
            old = entity_file(before, version, entity) if before else None
            frame = _publication(entity, view, version, old if old and old.is_file() else None, moment,
                                 tobedeleted_days, _digests_comparable(before))  # fmt: skip
            frame.write_parquet(entity_file(out, version, entity), row_group_size=ROW_GROUP, compression="zstd",
                                statistics=True)  # fmt: skip
            counts[entity] = {
                "records": frame.height,
                "changed": frame.filter(pl.col("dateLastModified") == moment).height,
                "tobedeleted": frame.filter(pl.col("status") == "tobedeleted").height,
            }
    write_whole(out / META, json.dumps(summary, sort_keys=True) + "\n", mode=None)
    return summary


def _digests_comparable(previous: Path | None) -> bool:
    """Whether the previous publication's digests were made by this polars (hash values are stable only
    within one polars version); if not, they are made again from its JSON."""
    if previous is None or not is_complete(previous):
        return True
    return json.loads((previous / META).read_text(encoding="utf-8")).get("polars") == pl.__version__


def _publication(
    entity: str, view: dict[str, pl.DataFrame], version: str, old: Path | None, moment: datetime,
    tobedeleted_days: int, comparable: bool,
) -> pl.DataFrame:  # fmt: skip
    rows = view[entity].with_columns(status=pl.lit(None, pl.String), dateLastModified=pl.lit(None, UTC_MS))
    pieces = []
    for start in range(0, max(rows.height, 1), CHUNK):
        chunk = rows.slice(start, CHUNK)
        texts = record_texts(entity, chunk, version, PLACEHOLDER, related=view)
        pieces.append(pl.DataFrame({"sourcedId": chunk["sourcedId"], "_content": texts}))
    current = pl.concat(pieces).with_columns(_digest=pl.col("_content").hash())
    stamp = pl.lit(moment, UTC_MS)
    if old is None:
        current = current.with_columns(status=pl.lit("active"), dateLastModified=stamp)
        gone = None
    else:
        last = pl.read_parquet(old, columns=["sourcedId", "status", "dateLastModified", "_digest"])
        if not comparable:
            content = pl.read_parquet(old, columns=["_json"])["_json"].str.replace(LIFECYCLE_PATTERN, ACTIVE)
            last = last.with_columns(_digest=content.hash())
        earlier = last.select("sourcedId", _status_last="status", _date_last="dateLastModified",
                              _digest_last="_digest")  # fmt: skip
        joined = current.join(earlier, on="sourcedId", how="left", maintain_order="left")
        same = (pl.col("_status_last") == "active") & (pl.col("_digest") == pl.col("_digest_last"))
        current = joined.select(
            "sourcedId", "_content", "_digest", status=pl.lit("active"),
            dateLastModified=pl.when(same).then(pl.col("_date_last")).otherwise(stamp),
        )  # fmt: skip
        gone = _gone(old, last.join(current.select("sourcedId"), on="sourcedId", how="anti"), moment,
                     tobedeleted_days)  # fmt: skip
    lifecycle = pl.lit(',"status":"') + pl.col("status") + pl.lit('","dateLastModified":"') + \
        pl.col("dateLastModified").dt.strftime(DATETIME_TEXT) + pl.lit('"')  # fmt: skip
    at = pl.col("_content").str.find(ACTIVE, literal=True)
    current = current.with_columns(
        _json=pl.col("_content").str.slice(0, at) + lifecycle + pl.col("_content").str.slice(at + len(ACTIVE))
    ).drop("_content")
    current = pl.concat([current, _typed(current["_json"], entity, version)], how="horizontal")
    if gone is not None and gone.height:
        current = pl.concat([current, gone], how="diagonal_relaxed")
    return current.sort("sourcedId")



def _gone(old: Path, left: pl.DataFrame, moment: datetime, days: int) -> pl.DataFrame:
    """The records of the last publication that this one lacks: tobedeleted from `moment`, or already
    tobedeleted and kept until `days` have passed since they left."""
    cutoff = moment - timedelta(days=days)
    left = left.with_columns(
        dateLastModified=pl.when(pl.col("status") == "active").then(pl.lit(moment, UTC_MS))
        .otherwise(pl.col("dateLastModified"))
    ).filter(pl.col("dateLastModified") > pl.lit(cutoff, UTC_MS) if days else pl.lit(False))  # fmt: skip
    if not left.height:
        return left.clear()
    kept = (
        pl.scan_parquet(old).join(left.lazy().select("sourcedId", "dateLastModified"), on="sourcedId", how="semi")
        .collect()
    )  # fmt: skip
    kept = kept.drop("dateLastModified").join(left.select("sourcedId", "dateLastModified"), on="sourcedId")
    lifecycle = pl.lit(',"status":"tobedeleted","dateLastModified":"') + \
        pl.col("dateLastModified").dt.strftime(DATETIME_TEXT) + pl.lit('"')  # fmt: skip
    return kept.with_columns(
        status=pl.lit("tobedeleted"), _json=pl.col("_json").str.replace(LIFECYCLE_PATTERN, lifecycle)
    )


# --- typed columns for filter, sort and the relationship endpoints ------------------------------------------


def json_fields(entity: str, version: str) -> list[str]:
    """The top-level fields a record of `entity` may carry in `version` (whether or not a record has them)."""
    table = schema.VERSIONS[version].tables[entity]
    names = []
    for col in table.columns:
        if col.kind is Kind.SECRET:
            continue
        name = RENAMED.get(col.name, col.name)
        if col.kind is Kind.REF and name.endswith("SourcedId"):
            name = name.removesuffix("SourcedId")
        names.append(name)
    if entity in ("orgs", "academicSessions"):
        names.append("children")
    if entity == "users":
        names += ["role", "orgs"] if version == "1.1" else ["roles", "primaryOrg", "userProfiles"]
    names.append("metadata")
    return list(dict.fromkeys(names))


LISTS = (Kind.REF_LIST, Kind.LIST, Kind.ENUM_LIST, Kind.GRADES)


def field_types(entity: str, version: str) -> dict[str, pl.DataType]:
    """The typed column of each field a record may carry (so a field no record has is still a column a filter,
    a sort or a relationship can read, all null)."""
    table = schema.VERSIONS[version].tables[entity]
    types: dict[str, pl.DataType] = {}
    for col in table.columns:
        if col.kind in (Kind.SECRET, Kind.USER_IDS, Kind.GUID, Kind.STATUS, Kind.MODIFIED):
            continue
        name = RENAMED.get(col.name, col.name)
        if col.kind is Kind.REF and name.endswith("SourcedId"):
            name = name.removesuffix("SourcedId")
        types[name] = pl.List(pl.String) if col.kind in LISTS else pl.Date if col.kind is Kind.DATE else pl.String
    if entity in ("orgs", "academicSessions"):
        types["children"] = pl.List(pl.String)
    if entity == "users":
        types.update({"role": pl.String, "orgs": pl.List(pl.String)} if version == "1.1" else
                     {"role": pl.List(pl.String), "primaryOrg": pl.String})  # fmt: skip
    return types


def _typed(texts: pl.Series, entity: str, version: str) -> pl.DataFrame:
    """The records' fields as typed columns: a ref as its sourcedId, a list of refs as a list of them, dates
    as dates; objects (metadata, userIds, userProfiles) are left to the JSON."""
    table = schema.VERSIONS[version].tables[entity]
    dates = {RENAMED.get(c.name, c.name) for c in table.columns if c.kind is Kind.DATE}
    if texts.is_empty():  # no record: the columns alone
        hidden = {"_roles": pl.List(pl.String), "_orgs": pl.List(pl.String)} if entity == "users" else {}
        return pl.DataFrame(schema=field_types(entity, version) | hidden)
    decoded = texts.str.json_decode(infer_schema_length=None).struct.unnest()
    columns = []
    for name, dtype in decoded.schema.items():
        if name in ("sourcedId", "status", "dateLastModified", "metadata", "userIds", "userProfiles"):
            continue
        c = pl.col(name)
        if isinstance(dtype, pl.Struct) and "sourcedId" in {f.name for f in dtype.fields}:
            columns.append(c.struct.field("sourcedId").alias(name))
        elif isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
            inner = {f.name for f in dtype.inner.fields}
            if "sourcedId" in inner:
                columns.append(c.list.eval(pl.element().struct.field("sourcedId")).alias(name))
            elif name == "roles":
                columns.append(c.list.eval(pl.element().struct.field("role")).alias("role"))
        elif name in dates:
            columns.append(c.str.to_date("%Y-%m-%d", strict=False))
        elif isinstance(dtype, pl.List):
            columns.append(c.cast(pl.List(pl.String)))
        elif dtype != pl.Null:
            columns.append(c.cast(pl.String))
    typed = decoded.select(columns) if columns else pl.DataFrame(height=decoded.height)
    absent = {name: dtype for name, dtype in field_types(entity, version).items() if name not in typed.columns}
    typed = typed.with_columns(pl.lit(None, dtype).alias(name) for name, dtype in absent.items())
    if entity == "users":
        typed = typed.hstack(decoded.select(_membership(decoded, version)))
    return typed


def _membership(decoded: pl.DataFrame, version: str) -> list[pl.Expr]:
    """users: `_roles` (every role the user holds) and `_orgs` (every org they hold one at, or belong to)."""
    names = decoded.columns
    if version == "1.1":
        roles = pl.concat_list(pl.col("role").cast(pl.String)) if "role" in names else pl.lit([], pl.List(pl.String))
        orgs = (pl.col("orgs").list.eval(pl.element().struct.field("sourcedId")) if "orgs" in names
                else pl.lit([], pl.List(pl.String)))  # fmt: skip
        return [roles.alias("_roles"), orgs.alias("_orgs")]
    if "roles" in names:
        roles = pl.col("roles").list.eval(pl.element().struct.field("role"))
        orgs = pl.col("roles").list.eval(pl.element().struct.field("org").struct.field("sourcedId"))
    else:
        roles = orgs = pl.lit([], pl.List(pl.String))
    if "primaryOrg" in names:
        orgs = pl.concat_list(orgs, pl.col("primaryOrg").struct.field("sourcedId")).list.drop_nulls()
    return [roles.fill_null([]).alias("_roles"), orgs.fill_null([]).list.unique(maintain_order=True).alias("_orgs")]
