"""Snapshot rows as OneRoster REST JSON records, for either served version, whichever CSV version they came from.

    record_texts("users", page, "1.2", "https://host/ims/oneroster/rostering/v1p2", related=frames)
        -> a String Series: one JSON object per row of `page`, in the page's order
    records(...) -> the same as dicts

`page` is a frame of stored rows (at most a few thousand: one page of a collection). `related` holds the
snapshot's frames (LazyFrames are fine: only the rows that the page needs are read) for what a record
shows but its own row lacks: an org's or session's children, a 1.2 user's roles and userProfiles, the org
types that turn a 1.1 administrator into a 1.2 one, the enrollments that give a 1.2 user without a 1.1 role
theirs. Pass them already cut to what the client may see: children, roles and profiles are listed from
them as given (a tobedeleted role kept for deltas is listed too).

The JSON (shared/reference/oneroster_rest.md): every row is turned into one object with expressions,
column by column, with no Python loop over rows.
- sourcedId, status (blank in a bulk snapshot: `active`), dateLastModified (UTC, `YYYY-MM-DDTHH:MM:SS.sssZ`;
  a row without one takes `modified_at`, or goes without when that is None too).
- `metadata`: an object of the row's `metadata.*` columns (`metadata.region` -> {"region": ...}), text values.
- A reference column `xSourcedId` is the field `x` as {"href": BASE/collection/id, "sourcedId", "type"}
  (`parent`, `schoolYear`, `org`, `course`, `school`, `class`, `user`, `primaryOrg`); a list of them
  (`termSourcedIds`, `orgSourcedIds`, `agentSourcedIds`) is `terms`, `orgs`, `agents`. In an href the
  sourcedId has `%`, `/`, `?`, `#` and space percent-encoded; the `type` is the singular of the collection
  (org, academicSession, course, class, user).
- Lists (grades, subjects, subjectCodes, periods) are arrays; booleans are the strings "true"/"false" in
  both versions (enabledUser, enrollment primary, the demographics flags), as the spec's TrueFalse
  vocabulary; dates `YYYY-MM-DD`; academicSessions.schoolYear the four-digit year as a string.
- userIds: `{type:id}` items as [{"type", "identifier"}], split at the first colon.
- orgs and academicSessions: `children`, the refs of the related rows whose parent is this one, by sourcedId
  (without related[entity]: of the page's own rows).
- 1.1 users: `role`, `orgs`. 1.2 users: `roles` [{roleType, role, org, userProfile?, beginDate?, endDate?}]
  (primary first, then by sourcedId), `primaryOrg`, `userProfiles` [{profileId, profileType, vendorId,
  applicationId?, description?, credentials: [{type, username}]}], and the CSV's preferredGivenName and
  preferredFamilyName under the JSON's names preferredFirstName and preferredLastName.
- Never served: users.password and userProfiles.password (a credential's password is left out too).
- A field whose value is blank, or a list that is empty, is left out, not sent as null: the OpenAPI documents
  mark them optional, and strict clients reject a null where a string or array is typed. Required fields
  are never blank in a valid snapshot, so they are always there; two fields the CSV may leave blank but the
  OpenAPI documents require are sent empty instead (ALWAYS): an org's `identifier` as "" and a 1.1 user's
  `orgs` as [].

Versions: the rows go through daemon.oneroster.export.convert, the same conversion licence targets' CSV gets.
A 1.1 snapshot served as 1.2: roles from role + orgSourcedIds (the first org primary, an administrator a
district or site administrator by the org's type), primaryOrg the first org. A 1.2 snapshot served as 1.1:
orgs and role from primaryOrg and the roles (a user with no role 1.1 can say takes their first enrollment's,
from related["enrollments"]); a user left without one has no `role` field. A vocabulary token 1.1 lacks
(sex `other`, an `ext:` token) is left out, and 1.1 grades keep only CEDS codes, as in the CSV export.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import polars as pl

from daemon.oneroster import export, schema
from daemon.oneroster.schema import Column, Kind

VERSIONS = ("1.1", "1.2")
COLLECTIONS = ("orgs", "academicSessions", "courses", "classes", "users", "enrollments", "demographics")
REF_TYPES = {"orgs": "org", "academicSessions": "academicSession", "courses": "course", "classes": "class",
             "users": "user"}  # fmt: skip
# CSV column names that the JSON binding names otherwise (references lose `SourcedId(s)` generically).
RENAMED = {"preferredGivenName": "preferredFirstName", "preferredFamilyName": "preferredLastName",
           "termSourcedIds": "terms", "orgSourcedIds": "orgs", "agentSourcedIds": "agents"}  # fmt: skip
DATETIME_TEXT = "%Y-%m-%dT%H:%M:%S%.3fZ"
# Fields the 1EdTech OpenAPI documents require although the CSV may leave them blank: sent empty (as JSON
# text) rather than left out, since clients generated from those documents refuse a record without them.
ALWAYS = {"orgs": {"identifier": '""'}, "users": {"orgs": "[]"}}
HREF_ESCAPES = (["%", "/", "?", "#", " "], ["%25", "%2F", "%3F", "%23", "%20"])
UTC_MS = pl.Datetime("ms", "UTC")
_V = "v"  # the one field of the struct a value is JSON-encoded in

Frame = pl.DataFrame | pl.LazyFrame
Related = Mapping[str, Frame]


def records(entity: str, page: pl.DataFrame, version: str, base_url: str, **options) -> list[dict]:
    """record_texts(...) parsed: one dict per row."""
    return [json.loads(text) for text in record_texts(entity, page, version, base_url, **options)]


def record_texts(
    entity: str, page: pl.DataFrame, version: str, base_url: str, *, related: Related | None = None,
    modified_at: datetime | None = None, fields: Sequence[str] | None = None,
) -> pl.Series:  # fmt: skip
    """One JSON object (text) per row of `page`, in its order. `fields`: only these top-level fields."""
    joined, parts, _membership = _render(entity, page, version, base_url, related, modified_at)
    if fields is not None:
        wanted = set(fields)
        parts = [(name, value) for name, value in parts if name in wanted]
    return joined.select(_object(parts).alias("json")).to_series()


def publication_rows(
    entity: str, page: pl.DataFrame, version: str, base_url: str, *, related: Related | None = None
) -> tuple[pl.Series, pl.DataFrame]:  # fmt: skip
    """What a publication keeps of each row of `page` (daemon/targets/api/publish.py): the record's JSON text
    without sourcedId, status and dateLastModified (which change without the content changing), and its
    fields as typed columns for filters and sorts: sourcedId, each field under its JSON name (a reference
    as its sourcedId, a list of them as a list, booleans as "true"/"false", dates as dates), and for users
    `_roles` and `_orgs` (every role held, every org held at or belonged to), and in 1.2 `role` (the roles'
    role values, the sub-field a filter may name)."""
    joined, parts, membership = _render(entity, page, version, base_url, related, None)
    content = [(name, value) for name, value in parts if name not in LIFECYCLE]
    texts = joined.select(_object(content).alias("_json")).to_series()
    table = schema.VERSIONS[version].tables[entity]
    columns = [pl.col("sourcedId")]
    for col in table.columns:
        if col.name in joined.columns and col.kind not in UNTYPED:
            columns.append(_typed(col, joined.schema[col.name]))
    typed = joined.select(columns)
    if membership is not None:
        typed = typed.join(membership, on="sourcedId", how="left", maintain_order="left").with_columns(
            pl.col("_roles", "_orgs").fill_null([]))  # fmt: skip
        if version == "1.2":
            typed = typed.with_columns(role=pl.col("_roles"))
    return texts, typed


LIFECYCLE = ("sourcedId", "status", "dateLastModified")
UNTYPED = (Kind.GUID, Kind.SECRET, Kind.USER_IDS, Kind.STATUS, Kind.MODIFIED)


def json_name(col: Column) -> str:
    """The JSON field a CSV column becomes: its RENAMED name, and a reference without its `SourcedId`."""
    name = RENAMED.get(col.name, col.name)
    return name.removesuffix("SourcedId") if col.kind is Kind.REF and name.endswith("SourcedId") else name


def _typed(col: Column, dtype: pl.DataType) -> pl.Expr:
    """A stored column as the typed column of its JSON field (see publication_rows)."""
    c = pl.col(col.name)
    name = json_name(col)
    if isinstance(dtype, pl.List):
        return c.cast(pl.List(pl.String)).alias(name)
    if dtype == pl.Boolean:
        return pl.when(c).then(pl.lit("true")).when(c.not_()).then(pl.lit("false")).alias(name)
    if dtype == pl.Date:
        return c.alias(name)
    if col.kind is Kind.YEAR and dtype.is_integer():
        return c.cast(pl.String).str.zfill(4).alias(name)
    return c.cast(pl.String).alias(name)


def _render(
    entity: str, page: pl.DataFrame, version: str, base_url: str, related: Related | None,
    modified_at: datetime | None,
) -> tuple[pl.DataFrame, list[tuple[str, pl.Expr]], pl.DataFrame | None]:  # fmt: skip
    """The page converted to `version` with the fields drawn from other rows, each JSON field as (name, JSON
    text expression) over it, and for users their roles and orgs (sourcedId, _roles, _orgs)."""
    if entity not in COLLECTIONS:
        raise ValueError(f"{entity!r} is not a rostering collection ({', '.join(COLLECTIONS)})")
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, not {version!r}")
    related = related or {}
    base = base_url.rstrip("/")
    page = page.drop("_row", strict=False).rechunk()  # a page glued from many pieces is slow to work on
    lifecycle = {"status": pl.String, "dateLastModified": UTC_MS}  # every record has both, blank or not
    page = page.with_columns(pl.lit(None, dtype).alias(n) for n, dtype in lifecycle.items() if n not in page.columns)
    frame, extra, membership = _in_version(entity, page, version, related, base)
    table = schema.VERSIONS[version].tables[entity]
    parts = [_field(col, frame.schema[col.name], base, modified_at) for col in table.columns
             if col.name in frame.columns and col.kind is not Kind.SECRET]  # fmt: skip
    metadata = sorted(c for c in frame.columns if c.startswith("metadata."))
    if metadata:
        parts.insert(3, ("metadata", _object([(c.removeprefix("metadata."), _json(pl.col(c).cast(pl.String)))
                                              for c in metadata], omit_empty=True)))  # fmt: skip
    parts += [(name, pl.col(name)) for name in extra.columns if name != "sourcedId"]
    always = ALWAYS.get(entity, {})
    parts = [(name, value.fill_null(pl.lit(always[name])) if name in always else value) for name, value in parts]
    joined = frame.join(extra, on="sourcedId", how="left", maintain_order="left") if extra.width > 1 else frame
    return joined, parts, membership


# --- JSON text from expressions ---------------------------------------------------------------------------


def _json(value: pl.Expr) -> pl.Expr:
    """The value as JSON text (null stays null, so the field can be left out)."""
    encoded = pl.struct(value.alias(_V)).struct.json_encode()
    return pl.when(value.is_not_null()).then(encoded.str.strip_prefix(f'{{"{_V}":').str.strip_suffix("}"))


def _object(parts: Sequence[tuple[str, pl.Expr]], *, omit_empty: bool = False) -> pl.Expr:
    """A JSON object of (name, JSON text) pairs, a null text leaving its pair out (`omit_empty`: the whole
    object null when every pair is left out)."""
    pairs = [pl.lit(json.dumps(name) + ":") + text for name, text in parts]
    inner = pl.concat_str(pairs, separator=",", ignore_nulls=True) if pairs else pl.lit("")
    text = pl.lit("{") + inner + pl.lit("}")
    return pl.when(inner != "").then(text) if omit_empty else text


def _ref_struct(ids: pl.Expr, entity: str, base: str) -> pl.Expr:
    href = pl.lit(f"{base}/{entity}/") + ids.str.replace_many(*HREF_ESCAPES)
    return pl.struct(href=href, sourcedId=ids, type=pl.lit(REF_TYPES[entity]))


def _nonempty(value: pl.Expr) -> pl.Expr:
    return pl.when(value.list.len() > 0).then(value)


def _field(col: Column, dtype: pl.DataType, base: str, modified_at: datetime | None) -> tuple[str, pl.Expr]:
    """The JSON field of one CSV column: (name, JSON text)."""
    c, kind = pl.col(col.name), col.kind
    name = RENAMED.get(col.name, col.name)
    if kind is Kind.STATUS:
        return name, _json(c.fill_null("active"))
    if kind is Kind.MODIFIED:
        if isinstance(dtype, pl.Datetime):
            c = c.dt.convert_time_zone("UTC") if dtype.time_zone else c.dt.replace_time_zone("UTC")
        if modified_at is not None:
            moment = modified_at.replace(tzinfo=UTC) if modified_at.tzinfo is None else modified_at.astimezone(UTC)
            c = c.fill_null(pl.lit(moment, pl.Datetime("us", "UTC")))
        return name, _json(c.dt.strftime(DATETIME_TEXT))
    if kind is Kind.REF and col.ref is not None and col.ref.entity in REF_TYPES and col.name.endswith("SourcedId"):
        one = pl.when(c.is_not_null()).then(_ref_struct(c, col.ref.entity, base))
        return json_name(col), _json(one)
    if kind is Kind.REF_LIST and col.ref is not None:
        return name, _json(_nonempty(c.list.eval(_ref_struct(pl.element(), col.ref.entity, base))))
    if kind is Kind.USER_IDS:  # {type:id}: the type holds no colon, the id may
        pairs = c.list.eval(pl.struct(type=pl.element().str.extract(r"^\{([^:]*):", 1),
                                      identifier=pl.element().str.extract(r"^\{[^:]*:(.*)\}$", 1)))  # fmt: skip
        return name, _json(_nonempty(pairs))
    if isinstance(dtype, pl.List):
        return name, _json(_nonempty(c.list.eval(pl.element().cast(pl.String))))
    if dtype == pl.Boolean:
        return name, _json(pl.when(c).then(pl.lit("true")).when(c.not_()).then(pl.lit("false")))
    if dtype == pl.Date:
        return name, _json(c.dt.strftime("%Y-%m-%d"))
    if kind is Kind.YEAR and dtype.is_integer():
        return name, _json(c.cast(pl.String).str.zfill(4))
    return name, _json(c.cast(pl.String))


# --- the rows in the served version's layout, and what they draw from other entities --------------------


def _in_version(
    entity: str, page: pl.DataFrame, version: str, related: Related, base: str
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame | None]:
    """The page converted to `version`, a frame of sourcedId and JSON fields drawn from other rows, and for
    users their membership (see _membership)."""
    ids = page.select("sourcedId")
    if entity == "users":
        users, roles, profiles = _users(page, version, related)
        extra = ids
        if roles is not None and roles.height:
            extra = extra.join(_role_arrays(roles, base), on="sourcedId", how="left")
        if profiles is not None and profiles.height:
            extra = extra.join(_profile_arrays(profiles), on="sourcedId", how="left")
        return users, extra, _membership(users, roles, version)
    frame = export.convert({entity: page}, version, complete=False)[entity]
    if entity in ("orgs", "academicSessions"):
        return frame, _children(ids, related.get(entity, page), entity, base), None
    return frame, ids, None


def _membership(users: pl.DataFrame, roles: pl.DataFrame | None, version: str) -> pl.DataFrame:
    """sourcedId, `_roles` (every role the user holds) and `_orgs` (every org they hold one at or belong to)."""
    if version == "1.1":
        return users.select("sourcedId", _roles=pl.concat_list(pl.col("role")).list.drop_nulls(),
                            _orgs=pl.col("orgSourcedIds").cast(pl.List(pl.String)))  # fmt: skip
    held = pl.DataFrame(schema={"sourcedId": pl.String, "_roles": pl.List(pl.String), "_orgs": pl.List(pl.String)})
    if roles is not None and roles.height:
        held = roles.group_by("userSourcedId", maintain_order=True).agg(
            _roles=pl.col("role").unique(maintain_order=True), _orgs=pl.col("orgSourcedId"),
        ).rename({"userSourcedId": "sourcedId"})  # fmt: skip
    primary = users.select("sourcedId", _primary=pl.col("primaryOrgSourcedId")) if "primaryOrgSourcedId" in \
        users.columns else users.select("sourcedId", _primary=pl.lit(None, pl.String))  # fmt: skip
    joined = primary.join(held, on="sourcedId", how="left", maintain_order="left")
    return joined.select(
        "sourcedId", _roles=pl.col("_roles").fill_null([]),
        _orgs=pl.concat_list(pl.col("_orgs").fill_null([]), pl.col("_primary")).list.drop_nulls()
        .list.unique(maintain_order=True),
    )  # fmt: skip


def _rows_of(frame: Frame, column: str, values: pl.Series) -> pl.DataFrame:
    """The rows of a (lazy) frame whose `column` is among `values`."""
    return frame.lazy().filter(pl.col(column).is_in(values.implode())).collect()


def _children(ids: pl.DataFrame, full: Frame, entity: str, base: str) -> pl.DataFrame:
    """sourcedId and children (JSON text: refs by sourcedId) of the page's rows."""
    kids = _rows_of(full.lazy().select("sourcedId", "parentSourcedId"), "parentSourcedId", ids["sourcedId"])
    grouped = (
        kids.sort("sourcedId").group_by("parentSourcedId", maintain_order=True)
        .agg(children=pl.col("sourcedId")).rename({"parentSourcedId": "sourcedId"})
    )  # fmt: skip
    refs = pl.col("children").list.eval(_ref_struct(pl.element(), entity, base))
    return ids.join(grouped, on="sourcedId", how="left").with_columns(children=_json(_nonempty(refs)))


def _users(
    page: pl.DataFrame, version: str, related: Related
) -> tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame | None]:
    """The users in the version's layout; for 1.2, their roles and userProfiles rows."""
    ids = page["sourcedId"]
    layout_11 = "orgSourcedIds" in page.columns
    if version == "1.1":
        if layout_11:
            return export.convert({"users": page}, version, complete=False)["users"], None, None
        frames = {"users": page}
        if "roles" in related:
            frames["roles"] = _rows_of(related["roles"], "userSourcedId", ids)
        users = export.convert(frames, version, complete=False)["users"]
        roleless = users.filter(pl.col("role").is_null())["sourcedId"]
        if roleless.len() and "enrollments" in related:  # read only for the few users that need them
            frames["enrollments"] = _rows_of(related["enrollments"], "userSourcedId", roleless)
            users = export.convert(frames, version, complete=False)["users"]
        return users, None, None
    if not layout_11:
        users = export.convert({"users": page}, version, complete=False)["users"]
        roles = _rows_of(related["roles"], "userSourcedId", ids) if "roles" in related else None
        profiles = _rows_of(related["userProfiles"], "userSourcedId", ids) if "userProfiles" in related else None
        return users, roles, profiles
    frames = {"users": page}
    if "orgs" in related:  # their types make a 1.1 administrator a district or a site one
        held = page["orgSourcedIds"].explode().drop_nulls().unique()
        frames["orgs"] = _rows_of(related["orgs"].lazy().select("sourcedId", "type"), "sourcedId", held)
    converted = export.convert(frames, version, complete=False)
    return converted["users"], converted["roles"], None


def _date_json(name: str, frame: pl.DataFrame) -> pl.Expr | None:
    return _json(pl.col(name).dt.strftime("%Y-%m-%d")) if name in frame.columns else None


def _role_arrays(roles: pl.DataFrame, base: str) -> pl.DataFrame:
    """sourcedId (the user's) and roles: a JSON array of the user's roles, primary first, then by sourcedId."""
    parts = [
        ("roleType", _json(pl.col("roleType"))),
        ("role", _json(pl.col("role"))),
        ("org", _json(_ref_struct(pl.col("orgSourcedId"), "orgs", base))),
        ("userProfile", _json(pl.col("userProfileSourcedId")) if "userProfileSourcedId" in roles.columns else None),
        ("beginDate", _date_json("beginDate", roles)),
        ("endDate", _date_json("endDate", roles)),
    ]
    one = roles.with_columns(_object([(n, v) for n, v in parts if v is not None]).alias("_json"))
    return _arrays(one.sort(pl.col("roleType") != "primary", "sourcedId"), "roles")


def _profile_arrays(profiles: pl.DataFrame) -> pl.DataFrame:
    """sourcedId (the user's) and userProfiles: a JSON array of their profiles by sourcedId, no passwords."""
    credential = _object([("type", _json(pl.col("credentialType"))), ("username", _json(pl.col("username")))])
    parts = [
        ("profileId", _json(pl.col("sourcedId"))),
        ("profileType", _json(pl.col("profileType"))),
        ("vendorId", _json(pl.col("vendorId"))),
        ("applicationId", _json(pl.col("applicationId"))),
        ("description", _json(pl.col("description"))),
        ("credentials", pl.lit("[") + credential + pl.lit("]")),
    ]
    return _arrays(profiles.with_columns(_object(parts).alias("_json")).sort("sourcedId"), "userProfiles")


def _arrays(rows: pl.DataFrame, name: str) -> pl.DataFrame:
    """Rows' `_json` objects gathered per userSourcedId into one JSON array text named `name`."""
    grouped = rows.group_by("userSourcedId", maintain_order=True).agg(pl.col("_json"))
    return grouped.select(sourcedId="userSourcedId", **{name: pl.lit("[") + pl.col("_json").list.join(",") + "]"})
