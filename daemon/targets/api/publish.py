"""What an api target serves: a publication, made from each accepted snapshot in a worker process.

A publication is one folder per api target (STATE/targets/<tenant>/<target>/<upload_id>@<time>/, next to the
views licence targets keep) with, per served version, one Parquet file per stored collection
(`1.2/users.parquet`):
- one row per record the vendor may see, in sourcedId order, in row groups of ROW_GROUP rows;
- `_json`: the record's JSON text without sourcedId, status and dateLastModified, its hrefs starting with
  PLACEHOLDER (the server puts its own base URL there, so a publication does not depend on the host name a
  client used); `_digest`, its hash, for the next publication's comparison;
- `sourcedId`, `status`, `dateLastModified` and the record's other fields as typed columns (references as
  their sourcedId, arrays as lists, dates as dates) for `filter` and `sort`, and `_roles`/`_orgs` on users for
  the relationship endpoints. The server assembles each record's text from sourcedId, status,
  dateLastModified and `_json`, only for the records of the page it answers.

Why this, and not a query engine over the snapshot at request time: a page in the default order is a slice of
a few columns, and Parquet's row groups let polars read only the groups that hold it, so a page costs the
same at offset 0 and at offset 2,800,000 and never reads the rest of the file; a filter or a sort reads only the
typed columns it names. The JSON is made once per snapshot, in bulk, off the event loop, rather than per page.

dateLastModified is rosterd's, not the SIS's: the moment the record's current content was first served. A
record whose JSON is the same as in the last publication keeps that publication's date; any other record
(new, changed, or one that left) is dated by this publication, whose moment is set only when it is switched
in (`make_visible`, called by target.py just before the folder is renamed into place: the stored date is
null and the VISIBLE file holds the moment). So a consumer that read the last publication at any time before
the switch and then asks `filter=dateLastModified>'T'` with T its last read gets everything that changed, and
nothing changes date without being served. A record in the last publication and not in this one (it left the
roster or the vendor's scope) stays, with its last content, as `status: tobedeleted` dated when it left, for
`tobedeleted_days`, then goes. A held upload makes no publication (the outbox queues its deliveries only on
approval), so the API keeps serving the last accepted roster meanwhile.
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
from daemon.snapshots.storage import Folder
from daemon.targets.api.shapes import COLLECTIONS, DATETIME_TEXT, UTC_MS, json_name, publication_rows
from daemon.targets.scope import scoped_view
from daemon.targets.settings import Scope

PLACEHOLDER = "@base@"  # the base of hrefs when none is given (tests)
PREFIXES = {"1.1": "/ims/oneroster/v1p1", "1.2": "/ims/oneroster/rostering/v1p2"}
NOW_MARK = '"dateLastModified":"@now@"'  # a date this publication sets: its moment, put in when served
HEAD_PATTERN = r'^\{"sourcedId":"(?:[^"\\]|\\.)*","status":"[a-z]+","dateLastModified":"[^"]*",?'

ROW_GROUP = 20_000  # each read parses the file's metadata: fewer, larger groups cost less per page
META = "published.json"  # written when the publication is built: a folder with it is complete
VISIBLE = "visible.json"  # written when it is switched in: the moment that dates its changes
CHUNK = 200_000  # rows turned into JSON at a time, to bound the worker's memory


def entity_file(folder: Path, version: str, entity: str) -> Path:
    return folder / version / f"{entity}.parquet"


def is_complete(folder: Path) -> bool:
    return (folder / META).is_file() and (folder / VISIBLE).is_file()


def make_visible(folder: Path, at: datetime) -> None:
    """Record the moment a built publication is switched in: it dates every record it changed."""
    moment = at.astimezone(UTC)
    write_whole(folder / VISIBLE, json.dumps({"at": moment.isoformat(timespec="milliseconds")}) + "\n", mode=None)


def visible_at(folder: Path) -> datetime:
    """The moment a publication was switched in (see make_visible)."""
    return datetime.fromisoformat(json.loads((folder / VISIBLE).read_text(encoding="utf-8"))["at"])


def publish_target(
    snapshot: Folder, previous: str | None, scope: dict, versions: list[str], tobedeleted_days: int, today: str,
    now: str, staging: str, base_url: str = PLACEHOLDER,
) -> dict:  # fmt: skip
    """In a worker process: the publication of `snapshot` for a target with `scope`, written to a fresh
    `staging` folder, following the `previous` publication (None: the first). `now` decides which records
    that left have been gone for `tobedeleted_days`. Hrefs start with `base_url` (scheme://host[:port]) and
    the version's path; a change of base changes every record, so the next publication dates them all. Returns
    its summary: per version and collection, how many records it has, how many it changed (new, changed or
    newly tobedeleted) and how many are tobedeleted."""
    moment = datetime.fromisoformat(now).astimezone(UTC)
    frames, _files = storage.scan_frames(snapshot)
    view, _left_out = scoped_view(frames, Scope.model_validate(scope), datetime.fromisoformat(today).date())
    view = {e: f.drop([c for c in SECRET_COLUMNS if c in f.columns]) for e, f in view.items()}
    out = Path(staging)
    storage.clear(out)
    before = Path(previous) if previous else None
    summary: dict = {"built_at": moment.isoformat(timespec="milliseconds"), "polars": pl.__version__,
                     "base_url": base_url, "versions": {}}  # fmt: skip
    for version in versions:
        (out / version).mkdir(parents=True)
        counts = summary["versions"][version] = {}
        for entity in COLLECTIONS:
            if entity not in view:
                continue
            old = entity_file(before, version, entity) if before else None
            last = _last(old, before) if old is not None and old.is_file() else None
            frame = _publication(entity, view, version, base_url + PREFIXES[version], old, last, moment,
                                 tobedeleted_days)  # fmt: skip
            frame.write_parquet(entity_file(out, version, entity), row_group_size=ROW_GROUP, compression="zstd",
                                statistics=True)  # fmt: skip
            counts[entity] = {
                "records": frame.height,
                "changed": frame.filter(pl.col("dateLastModified").is_null()).height,
                "tobedeleted": frame.filter(pl.col("status") == "tobedeleted").height,
            }
            del frame
    write_whole(out / META, json.dumps(summary, sort_keys=True) + "\n", mode=None)
    return summary


def _last(old: Path, folder: Path) -> pl.DataFrame:
    """What the comparison needs of the previous publication's records: sourcedId, status, dateLastModified
    (its own changes dated by its switch) and digest (made again from its JSON when another polars made it:
    hash values hold within one polars version only)."""
    meta = json.loads((folder / META).read_text(encoding="utf-8"))
    last = pl.read_parquet(old, columns=["sourcedId", "status", "dateLastModified", "_digest"])
    last = last.with_columns(pl.col("dateLastModified").fill_null(pl.lit(visible_at(folder), UTC_MS)))
    if meta.get("polars") != pl.__version__:
        texts = pl.read_parquet(old, columns=["_json"])
        last = last.with_columns(_digest=texts.select(_content_of(pl.col("_json")))["_json"].hash())
    return last


def _publication(
    entity: str, view: dict[str, pl.DataFrame], version: str, base_url: str, old: Path | None,
    last: pl.DataFrame | None, moment: datetime, tobedeleted_days: int,
) -> pl.DataFrame:  # fmt: skip
    """A collection's publication, in sourcedId order. Rows are turned into text CHUNK at a time, and each
    chunk is made whole (its dates, the records that left in its range) before the next, so the worker never
    holds the collection's text twice, nor copies it to sort it."""
    rows = view[entity]
    earlier = gone = None
    if last is not None:
        earlier = last.select("sourcedId", _status_last="status", _date_last="dateLastModified",
                              _digest_last="_digest")  # fmt: skip
        gone = _gone(old, last.join(rows.select("sourcedId"), on="sourcedId", how="anti"), moment, tobedeleted_days)
    starts = list(range(0, max(rows.height, 1), CHUNK))
    pieces = []
    for number, start in enumerate(starts):
        content, typed = publication_rows(entity, rows.slice(start, CHUNK), version, base_url, related=view)
        piece = typed.with_columns(_digest=content.hash(), status=pl.lit("active"))
        if earlier is None or not piece.height:
            piece = piece.with_columns(dateLastModified=pl.lit(None, UTC_MS))  # dated by this publication
        else:
            kept = piece.select("sourcedId", "_digest").join(_within(earlier, piece["sourcedId"]), on="sourcedId",
                                                             how="left", maintain_order="left")  # fmt: skip
            same = (pl.col("_status_last") == "active") & (pl.col("_digest") == pl.col("_digest_last"))
            piece = piece.with_columns(kept.select(dateLastModified=pl.when(same).then(pl.col("_date_last"))
                                                   .otherwise(pl.lit(None, UTC_MS))).to_series())  # fmt: skip
        piece = piece.with_columns(_json=_text(pl.lit(content)))
        del content
        if gone is not None and gone.height:  # the records that left between this chunk's start and the next's
            low = None if number == 0 else rows["sourcedId"][start]
            high = None if number == len(starts) - 1 else rows["sourcedId"][starts[number + 1]]
            between = gone.filter(_from_to(low, high))
            if between.height:
                piece = pl.concat([piece, between], how="diagonal_relaxed").sort("sourcedId")
        pieces.append(piece)
    current = pl.concat(pieces, how="diagonal_relaxed", rechunk=False)
    absent = {name: dtype for name, dtype in field_types(entity, version).items() if name not in current.columns}
    return current.with_columns(pl.lit(None, dtype).alias(name) for name, dtype in absent.items())


def _within(frame: pl.DataFrame, ids: pl.Series) -> pl.DataFrame:
    """The rows of `frame` (in sourcedId order) from the first to the last of `ids` (also in order)."""
    low = frame["sourcedId"].search_sorted(ids[0], side="left")
    high = frame["sourcedId"].search_sorted(ids[-1], side="right")
    return frame.slice(low, high - low)


def _from_to(low: str | None, high: str | None) -> pl.Expr:
    """sourcedId in [low, high); None: no bound."""
    expr = pl.lit(True)
    if low is not None:
        expr = expr & (pl.col("sourcedId") >= low)
    if high is not None:
        expr = expr & (pl.col("sourcedId") < high)
    return expr


def _lifecycle() -> pl.Expr:
    """`,"status":"…","dateLastModified":"…"` of a row, NOW_MARK for a date this publication sets."""
    date = pl.col("dateLastModified").dt.strftime(DATETIME_TEXT).fill_null(pl.lit("@now@"))
    return pl.concat_str(pl.lit(',"status":"'), pl.col("status"), pl.lit('","dateLastModified":"'), date, pl.lit('"'))


def _text(content: pl.Expr) -> pl.Expr:
    """The record's stored text: sourcedId, its lifecycle, then the fields of `content` (a JSON object)."""
    head = pl.struct(pl.col("sourcedId")).struct.json_encode().str.strip_suffix("}")
    rest = pl.when(content == "{}").then(pl.lit("}")).otherwise(pl.lit(",") + content.str.slice(1))
    return head + _lifecycle() + rest


def _content_of(text: pl.Expr) -> pl.Expr:
    """A stored text without sourcedId, status and dateLastModified: the JSON its digest is made of."""
    return text.str.replace(HEAD_PATTERN, "{")


def _gone(old: Path, left: pl.DataFrame, moment: datetime, days: int) -> pl.DataFrame:
    """The records of the last publication that this one lacks: tobedeleted from this publication on, or
    already tobedeleted and kept until `days` have passed since they left. `left` has their dates as the last
    publication served them (its own changes dated by its switch)."""
    if not days:
        return left.clear()
    cutoff = pl.lit(moment - timedelta(days=days), UTC_MS)
    keep = left.filter((pl.col("status") == "active") | (pl.col("dateLastModified") > cutoff))
    if not keep.height:
        return keep
    lifecycle = keep.select(
        "sourcedId", status=pl.lit("tobedeleted"),
        dateLastModified=pl.when(pl.col("status") == "active").then(pl.lit(None, UTC_MS))
        .otherwise(pl.col("dateLastModified")),
    )  # fmt: skip
    wanted = pl.col("sourcedId").is_in(lifecycle["sourcedId"].implode())  # read by row group, not whole
    kept = pl.scan_parquet(old).filter(wanted).collect()
    kept = kept.drop("status", "dateLastModified").join(lifecycle, on="sourcedId", maintain_order="left")
    return kept.with_columns(_json=_text(_content_of(pl.col("_json"))))


# --- typed columns for filter, sort and the relationship endpoints ------------------------------------------


def json_fields(entity: str, version: str) -> list[str]:
    """The top-level fields a record of `entity` may carry in `version` (whether or not a record has them)."""
    table = schema.VERSIONS[version].tables[entity]
    names = []
    for col in table.columns:
        if col.kind is Kind.SECRET:
            continue
        names.append(json_name(col))
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
        types[json_name(col)] = pl.List(pl.String) if col.kind in LISTS else pl.Date if col.kind is Kind.DATE else pl.String
    if entity in ("orgs", "academicSessions"):
        types["children"] = pl.List(pl.String)
    if entity == "users":
        types.update({"role": pl.String, "orgs": pl.List(pl.String)} if version == "1.1" else
                     {"role": pl.List(pl.String), "primaryOrg": pl.String})  # fmt: skip
        types.update({"_roles": pl.List(pl.String), "_orgs": pl.List(pl.String)})
    return types
