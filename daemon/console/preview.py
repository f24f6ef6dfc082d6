"""What a vendor gets, before it goes live; and what a CERS delivery sent.

    GET /tenants/{tenant}/targets/{target}/preview   the tenant's current snapshot as the target would get it:
        licence targets (webhook, sftp, api): ?view=classes|schools|users|left_out, ?class=SOURCEDID (a class's
        roster, or why it was left out), ?reason= (left_out), ?q= (sourcedId or name), ?page= (100 a page);
        CERS: ?view=groups (the default) or findings, ?class=SOURCEDID (a group's members)
    GET /deliveries/{delivery_id}/groups             the groups a CERS delivery sent and how each changed (?kind=,
                                                     ?q=, ?page=)
    GET /deliveries/{delivery_id}/files/{name}       a CERS dry run's file, from the tenant's results/cers/

A licence target's preview is daemon/targets/scope.py's view of the current snapshot on the target's today (in
its window's time zone; UTC for an api target), exactly as a delivery makes it: the scope rule is applied
there and only there (`explained_view` is scoped_view with the rows each count tallies). A CERS target's is
daemon/targets/cers/groups.py's groups of the snapshot. The groups of a delivery are built again from the two
snapshots it was made from (CERS's answer, the counts and the files are in the delivery's result); when
either snapshot was pruned, a dry run's files in results/cers/ still tell what was sent.

Scoping and building groups is bulk work: it runs in the console's threads (server.read) and is kept in a
small cache (CACHE_SIZE entries, least recently used dropped) keyed by the tenant, the target, the snapshot's
upload id, the target's settings and the day, so paging and searching never compute it again; two requests
for the same key wait for one computation. The handlers authorise as the other target and delivery pages do
(daemon/console/pages.py): what the account may not see answers 404.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
from aiohttp import web

from daemon.console import pages
from daemon.receipts.layout import DRY_RUN_FOLDER
from daemon.snapshots import storage
from daemon.snapshots.storage import Folder
from daemon.store import SnapshotRecord
from daemon.targets.cers.groups import build_groups, compared_groups
from daemon.targets.cers.settings import CersTarget
from daemon.targets.scope import LICENCE_COLUMN, explained_view
from daemon.targets.settings import Scope

PAGE_ROWS = 100
CACHE_SIZE = 4  # previews kept (each holds a scoped roster's shown columns)
VIEWS = ("classes", "schools", "users", "left_out")
KINDS = ("added", "changed", "emptied")
FILE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,250}\.csv$")
REASONS = {  # daemon/targets/scope.py's counts, as the left-out view explains them
    "classes_out_of_scope": "class not of a selected org, a listed course or a listed subject",
    "classes_not_started": "class starts more than class_start_days from today",
    "classes_ended": "class ended more than class_end_days ago",
    "enrollments_of_classes_left_out": "enrollment in a class left out",
    "enrollments_role_not_listed": "enrollment in a role not let in",
    "enrollments_of_orgs_left_out": "enrollment whose school is left out",
    "enrollments_of_users_left_out": "enrollment of a user left out",
    "users_not_in_scope_orgs": "holds a listed role, but at no selected org",
    "users_not_in_kept_classes": "a student or teacher of no class kept",
    "users_role_not_listed": "holds no role let in",
    "users_outside_domains": "e-mail outside email_domains (or none)",
    "users_without_org": "none of the user's orgs is sent",
    "orgs_out_of_scope": "org neither selected, above one, nor of a course sent",
    "courses_out_of_scope": "course used by no class sent, nor of a selected org",
    "scope_orgs_unmatched": "entries of scope.orgs naming no org",
    "scope_courses_unmatched": "entries of scope.courses naming no course",
}


def add_routes(server) -> None:
    """GET /tenants/{tenant}/targets/{target}/preview, /deliveries/{id}/groups and /deliveries/{id}/files/{name}."""
    handlers = PreviewPages(server)
    router = server.app.router
    router.add_get("/tenants/{tenant}/targets/{target}/preview", handlers.preview)
    router.add_get("/deliveries/{delivery_id}/groups", handlers.delivery_groups)
    router.add_get("/deliveries/{delivery_id}/files/{name}", handlers.delivery_file)


# -- what the pages show (blocking: called in the console's threads) ------------------------------------------


@dataclass
class Page:
    rows: list[dict]
    total: int  # rows matching the search
    page: int
    pages: int


def page_of(frame: pl.DataFrame, text: str, columns: tuple[str, ...], page: int, column: str = "",
            value: str = "") -> Page:  # fmt: skip
    """One page of `frame`'s rows in which one of `columns` holds `text` (case-insensitively), and when `value`
    is given, whose `column` is `value`."""
    if value:
        frame = frame.filter(pl.col(column) == value)
    if text:
        needle = text.lower()
        frame = frame.filter(pl.any_horizontal(
            pl.col(c).cast(pl.String).str.to_lowercase().str.contains(needle, literal=True).fill_null(False)
            for c in columns))  # fmt: skip
    pages = max(1, -(-frame.height // PAGE_ROWS))
    page = min(max(1, page), pages)
    return Page(frame.slice((page - 1) * PAGE_ROWS, PAGE_ROWS).to_dicts(), frame.height, page, pages)


@dataclass
class LicencePreview:
    """A licence target's view of one snapshot on one day, in the shapes the pages show."""

    today: date
    rows: dict[str, int]  # rows per entity in the view
    left_out: dict[str, int]  # the scope's counts that are not zero
    schools: pl.DataFrame  # the view's orgs: sourcedId, name, type, identifier, parentSourcedId, classes, students, teachers
    classes: pl.DataFrame  # sourcedId, title, classCode, schoolSourcedId, school, courseSourcedId, course, licence, students, teachers
    users: pl.DataFrame  # sourcedId, givenName, familyName, username, email, role, orgs, classes
    roster: pl.DataFrame  # the view's enrollments: classSourcedId, userSourcedId, role, primary, givenName, familyName, username, email
    left_rows: pl.DataFrame  # entity, sourcedId, reason, label (a name or title, or the enrollment's user and class)
    licensed: bool  # the scope gives licences (classes.metadata.licence)


def licence_preview(snapshot: Folder, scope: Scope, today: date) -> LicencePreview:
    """The snapshot in `snapshot` as the scope lets a target see it on `today` (daemon/targets/scope.py)."""
    frames, _files = storage.scan_frames(snapshot)
    view, counts, left = explained_view(frames, scope, today)
    enrollments = view["enrollments"]
    people = view["users"].select("sourcedId", "givenName", "familyName", "username", "email")
    members = enrollments.group_by("classSourcedId").agg(
        students=(pl.col("role") == "student").sum(), teachers=(pl.col("role") == "teacher").sum())  # fmt: skip
    orgs = view["orgs"].select("sourcedId", "name", "type", "identifier", "parentSourcedId")
    licensed = LICENCE_COLUMN in view["classes"].columns
    classes = (
        view["classes"]
        .select("sourcedId", "title", "classCode", "schoolSourcedId", "courseSourcedId",
                licence=pl.col(LICENCE_COLUMN) if licensed else pl.lit(None, pl.String))
        .join(orgs.select("sourcedId", school="name"), left_on="schoolSourcedId", right_on="sourcedId", how="left")
        .join(view["courses"].select("sourcedId", course="title"), left_on="courseSourcedId", right_on="sourcedId",
              how="left")
        .join(members, left_on="sourcedId", right_on="classSourcedId", how="left")
        .with_columns(pl.col("students", "teachers").fill_null(0))
        .sort("sourcedId")
    )  # fmt: skip
    school_of = enrollments.join(view["classes"].select("sourcedId", "schoolSourcedId"), left_on="classSourcedId",
                                 right_on="sourcedId")  # fmt: skip
    per_school = school_of.group_by("schoolSourcedId").agg(
        students=pl.col("userSourcedId").filter(pl.col("role") == "student").n_unique(),
        teachers=pl.col("userSourcedId").filter(pl.col("role") == "teacher").n_unique(),
    )
    class_counts = view["classes"].group_by("schoolSourcedId").agg(classes=pl.len())
    schools = (
        orgs.join(per_school, left_on="sourcedId", right_on="schoolSourcedId", how="left")
        .join(class_counts, left_on="sourcedId", right_on="schoolSourcedId", how="left")
        .with_columns(pl.col("classes", "students", "teachers").fill_null(0))
        .sort("sourcedId")
    )  # fmt: skip
    users = people.join(_roles(view), on="sourcedId", how="left").join(
        enrollments.group_by("userSourcedId").agg(classes=pl.len()), left_on="sourcedId", right_on="userSourcedId",
        how="left").with_columns(pl.col("classes").fill_null(0)).sort("sourcedId")  # fmt: skip
    roster = enrollments.select("classSourcedId", "userSourcedId", "role", "primary").join(
        people, left_on="userSourcedId", right_on="sourcedId", how="left"
    ).sort("classSourcedId", pl.col("role").replace_strict({"teacher": 0, "student": 1}, default=2), "familyName",
           "userSourcedId")  # fmt: skip
    return LicencePreview(
        today=today, rows={entity: frame.height for entity, frame in view.items()},
        left_out={reason: n for reason, n in counts.items() if n}, schools=schools, classes=classes, users=users,
        roster=roster, left_rows=_labelled(left, frames), licensed=licensed,
    )  # fmt: skip


def _roles(view: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """sourcedId, role, orgs of each user of the view (1.1: users.role and orgSourcedIds; 1.2: its roles rows)."""
    users = view["users"]
    if "orgSourcedIds" in users.columns:
        return users.select("sourcedId", "role", orgs=pl.col("orgSourcedIds").list.join(", "))
    roles = view.get("roles")
    if roles is None:
        return users.select("sourcedId", role=pl.lit(None, pl.String), orgs=pl.col("primaryOrgSourcedId"))
    return roles.group_by("userSourcedId").agg(
        role=pl.col("role").unique().sort().str.join(", "), orgs=pl.col("orgSourcedId").unique().sort().str.join(", ")
    ).rename({"userSourcedId": "sourcedId"})


def _labelled(left: pl.DataFrame, frames: dict[str, pl.LazyFrame]) -> pl.DataFrame:
    """The left-out rows with what a person recognises them by, orgs first and enrollments last."""
    named = {
        "orgs": pl.col("name"), "courses": pl.col("title"), "classes": pl.col("title"),
        "users": pl.concat_str("givenName", "familyName", separator=" "),
        "enrollments": pl.format("{} in {} ({})", "userSourcedId", "classSourcedId", "role"),
    }  # fmt: skip
    labels = pl.concat([frames[entity].select(pl.lit(entity).alias("entity"), "sourcedId", label=label)
                        for entity, label in named.items()]).collect()  # fmt: skip
    order = pl.col("entity").replace_strict(list(named), list(range(len(named))), default=len(named))
    return left.join(labels, on=["entity", "sourcedId"], how="left").sort(order, "reason", "sourcedId")


@dataclass
class CersPreview:
    """The groups CERS would hold after the snapshot, with the findings made building them."""

    groups: pl.DataFrame  # group_name, school_natural_id, school, school_year, subject_code, students, teachers, class_sourced_id, student_list, teacher_list
    findings: list[dict]


def cers_preview(snapshot: Folder, target: CersTarget) -> CersPreview:
    frames, _files = storage.scan_frames(snapshot)
    groups, findings = build_groups(frames, target.mapping, target.filters)
    return CersPreview(_shown_groups(groups, frames), findings)


def _shown_groups(groups: pl.DataFrame, *snapshots: dict[str, pl.LazyFrame]) -> pl.DataFrame:
    """Groups (COLUMNS, maybe `kind`) with their member counts and their school's name, from the first of the
    snapshots that has their class (an emptied group's class is only in the older one)."""
    shown = groups.with_columns(students=pl.col("students").list.len(), teachers=pl.col("teachers").list.len(),
                                student_list=pl.col("students"), teacher_list=pl.col("teachers"))  # fmt: skip
    schools = pl.concat([
        frames["classes"].select("sourcedId", "schoolSourcedId")
        .join(frames["orgs"].select("sourcedId", school="name"), left_on="schoolSourcedId", right_on="sourcedId")
        .select(class_sourced_id="sourcedId", school="school") for frames in snapshots
    ]).unique("class_sourced_id", keep="first", maintain_order=True).collect()  # fmt: skip
    return shown.join(schools, on="class_sourced_id", how="left")


@dataclass
class SentGroups:
    """What a CERS delivery sent, group by group, and how each changed; `source` says where it was read:
    "snapshots" (built again from the two snapshots: kinds known), "files" (a dry run's files in
    results/cers/: emptied groups known, added and changed not told apart) or None (only the result's counts)."""

    source: str | None
    groups: pl.DataFrame  # as _shown_groups, with kind
    counts: dict[str, int] = field(default_factory=dict)  # what the groups built now give, to set beside the result's
    notes: list[str] = field(default_factory=list)


EMPTY_GROUPS = pl.DataFrame(schema={"group_name": pl.String, "school_natural_id": pl.String, "school": pl.String,
                                    "school_year": pl.Int32, "subject_code": pl.String, "students": pl.UInt32,
                                    "teachers": pl.UInt32, "class_sourced_id": pl.String, "kind": pl.String})  # fmt: skip


def sent_groups(snapshot: Folder | None, base: Folder | None, based: bool, target: CersTarget,
                files: list[Path]) -> SentGroups:  # fmt: skip
    """The groups a delivery sent: built again from its snapshot and its base's (`based`: the delivery had a base,
    whose folder is `base` unless pruned), else read from its dry-run `files` that are still there."""
    if snapshot is not None and (base is not None or not based):
        frames, _ = storage.scan_frames(snapshot)
        base_frames = storage.scan_frames(base)[0] if base else {}
        new, _findings = build_groups(frames, target.mapping, target.filters)
        old = build_groups(base_frames, target.mapping, target.filters)[0] if base_frames else None
        compared = compared_groups(old, new)
        kinds = dict(compared["kind"].value_counts().iter_rows())
        counts = {"groups": new.height, **{kind: kinds.get(kind, 0) for kind in (*KINDS, "unchanged")}}
        sent = compared.filter(pl.col("kind") != "unchanged")
        return SentGroups("snapshots", _shown_groups(sent, *([frames, base_frames] if base_frames else [frames])),
                          counts)  # fmt: skip
    notes = ["The snapshot of this upload or of the one it was compared with is no longer kept."]
    if not files:
        return SentGroups(None, EMPTY_GROUPS, notes=notes)
    return SentGroups("files", read_group_files(files), notes=notes)


def read_group_files(files: list[Path]) -> pl.DataFrame:
    """The groups in CERS group files (HEADER): their subject, member counts, and `kind` emptied for a group sent
    with its key fields only, else "sent"."""
    rows = pl.concat([pl.read_csv(path, infer_schema=False) for path in files])
    rows = rows.with_columns(pl.col("student_ssid", "group_user_login", "subject_code").fill_null(""))
    groups = rows.group_by("school_natural_id", "group_name", "school_year", maintain_order=True).agg(
        subject_code=pl.col("subject_code").filter(pl.col("subject_code") != "").first().fill_null(""),
        students=(pl.col("student_ssid") != "").sum().cast(pl.UInt32),
        teachers=(pl.col("group_user_login") != "").sum().cast(pl.UInt32),
    )
    emptied = (pl.col("students") == 0) & (pl.col("teachers") == 0) & (pl.col("subject_code") == "")
    return groups.select(
        "group_name", "school_natural_id", school=pl.lit(None, pl.String), school_year=pl.col("school_year").cast(pl.Int32),
        subject_code="subject_code", students="students", teachers="teachers", class_sourced_id=pl.lit(None, pl.String),
        kind=pl.when(emptied).then(pl.lit("emptied")).otherwise(pl.lit("sent")),
    ).sort("school_natural_id", "group_name")  # fmt: skip


def dry_run_files(results: Path, names: list[str]) -> list[Path]:
    """Those of `names` still in results/cers/ (each a plain file directly in it)."""
    found = [dry_run_file(results, name) for name in names]
    return [path for path in found if path is not None]


def dry_run_file(results: Path, name: str) -> Path | None:
    """results/cers/<name> when it is a file right in that folder (no other path, however written), else None."""
    if not FILE_NAME.match(name):
        return None
    folder = (results / DRY_RUN_FOLDER).resolve()
    path = (folder / name).resolve()
    return path if path.parent == folder and path.is_file() else None


# -- the cache ----------------------------------------------------------------------------------------------


class Cache:
    """A few computed previews, least recently used dropped first; a key being computed is waited for."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self.entries: OrderedDict[Hashable, Future] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], object]) -> object:
        with self.lock:
            future = self.entries.get(key)
            mine = future is None
            if mine:
                future = self.entries[key] = Future()
                while len(self.entries) > self.size:
                    self.entries.popitem(last=False)
            self.entries.move_to_end(key)
        if mine:
            try:
                future.set_result(compute())
            except BaseException as exc:
                with self.lock:
                    if self.entries.get(key) is future:
                        del self.entries[key]
                future.set_exception(exc)
        return future.result()


# -- the pages --------------------------------------------------------------------------------------------------


def _page_number(value: str | None) -> int:
    try:
        return max(1, min(int(value or 1), 1_000_000))
    except ValueError:
        return 1


def target_today(target) -> date:
    """The day a delivery to the target would be made on: in its window's time zone (UTC without a window)."""
    window = getattr(target, "window", None)
    return datetime.now(ZoneInfo(window.time_zone) if window is not None else UTC).date()


class PreviewPages(pages.Pages):
    """The preview's handlers; target and delivery lookups (and who may see them) as every console page."""

    def __init__(self, server) -> None:
        super().__init__(server)
        self.cache = Cache()

    def _folder(self, record: SnapshotRecord) -> Folder:
        """A kept snapshot's folder, to preview it; one no replica has whole any more reads as empty."""
        return self.server.snapshot_folder(record) or Path(record.path)

    def _results(self, tenant: str) -> Path:
        return self.server.settings().tenant_root(tenant) / "results"

    async def preview(self, request: web.Request) -> web.StreamResponse:
        tenant, target = self._target(request)
        record = await self.server.read(self.server.store.current_snapshot, tenant)
        query = {k: request.query.get(k, "")[:200] for k in ("view", "q", "class", "reason")}
        number = _page_number(request.query.get("page"))
        values = {"tenant": tenant, "target": target, "snapshot": record, "chosen": query}
        if record is None or record.pruned_at:
            return self.server.render(request, "preview.html", **values)
        if isinstance(target, CersTarget):
            key = ("cers", tenant, target.name, record.upload_id, target.mapping.model_dump_json(),
                   target.filters.model_dump_json())  # fmt: skip
            shown = await self.server.read(self.cache.get, key, lambda: cers_preview(self._folder(record), target))
            view = query["view"] if query["view"] in ("groups", "findings") else "groups"
            values.update(cers=shown, view=view)
            if query["class"]:
                values["group"] = await self.server.read(_group_members, shown, query["class"])
            elif view == "groups":
                values["page"] = await self.server.read(page_of, shown.groups, query["q"],
                                                        ("group_name", "class_sourced_id", "school", "school_natural_id"),
                                                        number)  # fmt: skip
            return self.server.render(request, "preview_cers.html", **values)
        today = target_today(target)
        key = ("licence", tenant, target.name, record.upload_id, target.scope.model_dump_json(), today)
        shown = await self.server.read(self.cache.get, key, lambda: licence_preview(self._folder(record),
                                                                                     target.scope, today))  # fmt: skip
        view = query["view"] if query["view"] in VIEWS else "classes"
        values.update(preview=shown, view=view, reasons=REASONS)
        if query["class"]:
            values.update(await self.server.read(_class_roster, shown, query["class"]))
            return self.server.render(request, "preview_class.html", **values)
        frame, columns = {
            "classes": (shown.classes, ("sourcedId", "title", "classCode", "school", "course", "licence")),
            "schools": (shown.schools, ("sourcedId", "name", "identifier")),
            "users": (shown.users, ("sourcedId", "givenName", "familyName", "username", "email")),
            "left_out": (shown.left_rows, ("sourcedId", "label")),
        }[view]
        reason = query["reason"] if view == "left_out" else ""
        values["page"] = await self.server.read(page_of, frame, query["q"], columns, number, "reason", reason)
        return self.server.render(request, "preview.html", **values)

    async def delivery_groups(self, request: web.Request) -> web.StreamResponse:
        delivery = await self._delivery(request)
        config = self.server.settings().tenant(delivery.tenant)
        target = next((t for t in config.targets if t.name == delivery.target), None) if config else None
        if not isinstance(target, CersTarget):
            raise self.server.refuse(request, 404, "not a CERS delivery", delivery_id=delivery.id)
        result = delivery.result or {}
        store = self.server.store
        record = await self.server.read(store.snapshot, delivery.upload_id)
        base = await self.server.read(store.snapshot, delivery.base_upload_id) if delivery.base_upload_id else None
        kept = record.path if record is not None and not record.pruned_at else None
        base_kept = base.path if base is not None and not base.pruned_at else None
        names = [entry["name"] for entry in result.get("files", [])] if result.get("dry_run") else []
        files = await self.server.read(dry_run_files, self._results(delivery.tenant), names)
        key = ("sent", delivery.id, kept, base_kept, tuple(files), target.mapping.model_dump_json(),
               target.filters.model_dump_json())  # fmt: skip
        sent = await self.server.read(self.cache.get, key, lambda: sent_groups(
            self.server.snapshot_folder(record), self.server.snapshot_folder(base), delivery.base_upload_id is not None,
            target, files))  # fmt: skip
        chosen = {k: request.query.get(k, "")[:200] for k in ("kind", "q")}
        page = await self.server.read(page_of, sent.groups, chosen["q"], ("group_name", "class_sourced_id", "school",
                                                                           "school_natural_id"),
                                      _page_number(request.query.get("page")), "kind", chosen["kind"])  # fmt: skip
        recorded = {k: v for k, v in (result.get("counts") or {}).items() if k != "sent"}
        differs = sent.source == "snapshots" and any(sent.counts.get(k) != v for k, v in recorded.items())
        return self.server.render(request, "delivery_groups.html", delivery=delivery, target=target, sent=sent,
                                  page=page, chosen=chosen, differs=differs)  # fmt: skip

    async def delivery_file(self, request: web.Request) -> web.StreamResponse:
        delivery = await self._delivery(request)
        name = request.match_info["name"]
        result = delivery.result or {}
        listed = result.get("dry_run") is True and name in [e.get("name") for e in result.get("files", [])]
        path = await self.server.read(dry_run_file, self._results(delivery.tenant), name) if listed else None
        if path is None:
            raise self.server.refuse(request, 404, "no such dry-run file of this delivery", delivery_id=delivery.id,
                                     name=name[:100])  # fmt: skip
        return web.FileResponse(path, headers={"Content-Type": "text/csv; charset=utf-8",
                                               "Content-Disposition": f'attachment; filename="{path.name}"'})


def _class_roster(shown: LicencePreview, sourced_id: str) -> dict:
    """The class as sent with its roster (teachers first), or why it was left out."""
    found = shown.classes.filter(pl.col("sourcedId") == sourced_id).to_dicts()
    roster = shown.roster.filter(pl.col("classSourcedId") == sourced_id).to_dicts() if found else []
    why = shown.left_rows.filter((pl.col("entity") == "classes") & (pl.col("sourcedId") == sourced_id)).to_dicts()
    return {"klass": found[0] if found else None, "roster": roster, "why": why[0] if why else None}


def _group_members(shown: CersPreview, class_id: str) -> list[dict]:
    """The group (or the parts of a split one) made from the class, with its members."""
    return shown.groups.filter(pl.col("class_sourced_id") == class_id).to_dicts()
