"""What the console's pages show, read from the store and the state directory: one function per page or part.

Every function blocks (the store commits and reads under its lock; Parquet files are read with polars) and is
called by daemon/console/pages.py in the console's own threads, never on the event loop. They take the tenants
a page may show already decided (daemon/console/access.py); nothing here checks who asks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from daemon.config import Settings
from daemon.objects.mirror import NO_MIRROR, Mirror
from daemon.receipts import from_store
from daemon.snapshots import findings_file, storage
from daemon.snapshots.changes import ACTIONS, CHANGED, COUNTS_FILE, SECRET_COLUMNS, entity_order
from daemon.snapshots.storage import Folder
from daemon.store import Delivery, DeliveryState, SnapshotRecord, State, StoreInterface, Upload

PAGE_ROWS = 100  # findings and change-set rows per page
UPLOADS_SHOWN = 100  # a tenant's newest uploads on its page
STUCK_MINUTES = 15.0  # as `rosterd status` says: an upload still received or validating this long is stuck
STALE_HOURS = 48.0  # no accepted upload for this long makes a tenant's health a warning (nightly exports)
REDACTED = "[redacted]"
SECRET_SETTINGS = frozenset({"password_hash"})  # the only secret values a config holds (the rest are named)
FINDING_COLUMNS = ("code", "severity", "file", "row", "column", "value", "sourcedId", "message")


def parse_stamp(at: str) -> datetime:
    """A time as the store writes it (`stamp`: UTC, milliseconds, `Z`)."""
    return datetime.fromisoformat(at.replace("Z", "+00:00"))


def seconds_since(at: str | None, now: datetime) -> float | None:
    if not at:
        return None
    return (now - parse_stamp(at)).total_seconds()


# -- the overview --------------------------------------------------------------------------------------


@dataclass
class TenantHealth:
    tenant: str
    last_upload: Upload | None
    last_accepted_at: str | None
    held: int
    dead: int
    late: int  # deliveries whose last attempt failed and that wait for a retry
    backlog: int  # deliveries still to go
    paused: list[str]  # targets paused (config or console) or disabled by a 410
    stuck: int
    problems: list[str] = field(default_factory=list)
    level: int = 0  # 0 healthy, 1 needs a look, 2 needs action

    @property
    def level_name(self) -> str:
        return ("ok", "warn", "bad")[self.level]


def overview(store: StoreInterface, settings: Settings, tenants: list[str], now: datetime) -> list[TenantHealth]:
    """Each tenant's health, worst first (then by name)."""
    counts = store.counts()
    disabled = store.disabled_targets()
    uploads_of: dict[str, dict[str, int]] = {}  # the counts by tenant, sorted out once, not once per tenant
    for (t, state), n in counts["uploads"].items():
        uploads_of.setdefault(t, {})[state] = n
    deliveries_of: dict[str, dict[tuple[str, str], int]] = {}
    for (t, target, state), n in counts["deliveries"].items():
        deliveries_of.setdefault(t, {})[(target, state)] = n
    rows = []
    for name in tenants:
        config = settings.tenant(name)
        last = store.recent(name, 1)
        current = store.current_snapshot(name)
        by_state = uploads_of.get(name, {})
        deliveries = deliveries_of.get(name, {})
        paused = [target.name for target in (config.targets if config else [])
                  if (name, target.name) in disabled or getattr(getattr(target, "window", None), "paused", False)]
        health = TenantHealth(
            tenant=name,
            last_upload=last[0] if last else None,
            last_accepted_at=current.created_at if current else None,
            held=by_state.get(State.HELD, 0),
            dead=sum(n for (_, state), n in deliveries.items() if state == DeliveryState.DEAD),
            late=sum(n for (_, state), n in deliveries.items() if state == DeliveryState.FAILED),
            backlog=sum(n for (_, state), n in deliveries.items() if DeliveryState(state).open),
            paused=paused,
            stuck=sum(1 for u in last if u.state in (State.RECEIVED, State.VALIDATING)
                      and (seconds_since(u.updated_at, now) or 0) > STUCK_MINUTES * 60),
        )
        _judge(health, now)
        rows.append(health)
    rows.sort(key=lambda h: (-h.level, h.tenant))
    return rows


def _judge(health: TenantHealth, now: datetime) -> None:
    bad, warn = [], []
    if health.dead:
        bad.append(f"{health.dead} dead deliver{'y' if health.dead == 1 else 'ies'}")
    if health.held:
        bad.append(f"{health.held} held upload{'s' if health.held > 1 else ''}")
    if health.stuck:
        bad.append("upload stuck")
    last = health.last_upload
    if last is not None and last.state in (State.REJECTED, State.FAILED):
        bad.append(f"last upload {last.state}")
    if health.late:
        warn.append(f"{health.late} late deliver{'y' if health.late == 1 else 'ies'}")
    if health.paused:
        warn.append("paused or disabled: " + ", ".join(health.paused))
    since = seconds_since(health.last_accepted_at, now)
    if since is None:
        warn.append("no accepted upload yet")
    elif since > STALE_HOURS * 3600:
        warn.append(f"no accepted upload for {since / 86400:.0f} days")
    health.problems = bad + warn
    health.level = 2 if bad else 1 if warn else 0


# -- a tenant --------------------------------------------------------------------------------------------


@dataclass
class UploadLine:
    upload: Upload
    rows: int | None  # rows in the snapshot it made (None: it made none)
    seconds: float | None  # from received to its final state


def uploads(store: StoreInterface, tenant: str, limit: int = UPLOADS_SHOWN) -> list[UploadLine]:
    made = {record.upload_id: record for record, _ in store.snapshots(tenant)}
    lines = []
    for upload in store.recent(tenant, limit):
        record = made.get(upload.id)
        took = None
        if upload.state.final:
            took = (parse_stamp(upload.updated_at) - parse_stamp(upload.received_at)).total_seconds()
        lines.append(UploadLine(upload, sum(record.rows.values()) if record else None, took))
    return lines


@dataclass
class Chart:
    """Rows per entity across a tenant's snapshots, oldest first, as SVG coordinates."""

    width: int
    height: int
    lines: list[tuple[str, str, str]]  # (entity, colour, "x,y x,y ...")
    ticks: list[tuple[float, str]]  # (y, label)
    labels: list[tuple[float, str]]  # (x, date)


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#393b79", "#637939")  # fmt: skip


def chart(store: StoreInterface, tenant: str, width: int = 720, height: int = 240) -> Chart | None:
    history = [record for record, upload in reversed(store.snapshots(tenant))
               if upload.state in (State.ACCEPTED, State.HELD, State.SUPERSEDED, State.DISCARDED)]  # fmt: skip
    history = history[-60:]
    if not history:
        return None
    entities = entity_order({e for r in history for e in r.rows})
    top = max(max(r.rows.values(), default=0) for r in history) or 1
    left, bottom, right, upper = 60, height - 24, width - 10, 10
    step = (right - left) / max(1, len(history) - 1)

    def y(value: float) -> float:
        return round(bottom - (bottom - upper) * value / top, 1)

    lines = []
    for index, entity in enumerate(entities):
        points = " ".join(f"{round(left + i * step, 1)},{y(r.rows.get(entity, 0))}" for i, r in enumerate(history))
        lines.append((entity, COLOURS[index % len(COLOURS)], points))
    ticks = [(y(top * k / 4), f"{round(top * k / 4):,}") for k in range(5)]
    every = max(1, len(history) // 6)
    labels = [(round(left + i * step, 1), r.created_at[:10]) for i, r in enumerate(history) if i % every == 0]
    return Chart(width, height, lines, ticks, labels)


# -- an upload ------------------------------------------------------------------------------------------


def receipt(store: StoreInterface, upload: Upload) -> dict:
    return from_store(store, upload)


@dataclass
class FindingsPage:
    rows: list[dict]
    total: int  # findings matching the filter (of those kept)
    page: int
    pages: int
    codes: dict[str, int]  # every code's full count (the validator counts all, keeps examples)
    files: list[str]
    kept: int  # findings kept in all


def findings(state_dir: Path, store: StoreInterface, upload: Upload, code: str = "", file: str = "",
             text: str = "", page: int = 1, mirror: Mirror = NO_MIRROR) -> FindingsPage:  # fmt: skip
    """One page of the upload's findings, filtered by code, file and a text found in the value, column, message
    or sourcedId."""
    frame = _findings_frame(state_dir, store, upload, mirror)
    result = store.result(upload.id) or {}
    kept = frame.select(pl.len()).collect().item()
    files = sorted(f for f in frame.select(pl.col("file").unique()).collect().to_series().to_list() if f)
    chosen = _filtered(frame, code, file, text)
    total = chosen.select(pl.len()).collect().item()
    pages = max(1, -(-total // PAGE_ROWS))
    page = min(max(1, page), pages)
    rows = chosen.slice((page - 1) * PAGE_ROWS, PAGE_ROWS).collect().to_dicts()
    return FindingsPage(rows, total, page, pages, result.get("counts_by_code", {}), files, kept)


def findings_csv(state_dir: Path, store: StoreInterface, upload: Upload, code: str = "", file: str = "",
                 text: str = "", mirror: Mirror = NO_MIRROR) -> bytes:  # fmt: skip
    """The findings the filter picks, every one kept, as CSV (UTF-8, a header row)."""
    chosen = _filtered(_findings_frame(state_dir, store, upload, mirror), code, file, text)
    return chosen.select(FINDING_COLUMNS).collect().write_csv().encode("utf-8")


def _findings_frame(state_dir: Path, store: StoreInterface, upload: Upload, mirror: Mirror) -> pl.LazyFrame:
    scanned = findings_file.scan(findings_file.path_of(state_dir, upload.tenant, upload.id), mirror)
    if scanned is not None:
        return scanned
    kept = (store.result(upload.id) or {}).get("findings", [])
    return pl.DataFrame([{k: f.get(k) for k in findings_file.SCHEMA} for f in kept], schema=findings_file.SCHEMA,
                        orient="row").lazy().with_row_index("n")  # fmt: skip


def _filtered(frame: pl.LazyFrame, code: str, file: str, text: str) -> pl.LazyFrame:
    if code:
        frame = frame.filter(pl.col("code") == code)
    if file:
        frame = frame.filter(pl.col("file") == file)
    if text:
        needle = text.lower()
        frame = frame.filter(pl.any_horizontal(
            pl.col(c).cast(pl.String).str.to_lowercase().str.contains(needle, literal=True).fill_null(False)
            for c in ("value", "column", "message", "sourcedId", "row")
        ))  # fmt: skip
    return frame


@dataclass
class ChangeRows:
    entity: str
    action: str
    rows: list[dict]  # sourcedId, fields (added/deleted: name -> value) or changed (field, old, new)
    total: int
    page: int
    pages: int
    counts: dict[str, dict[str, int]]  # per entity, per action
    available: bool  # False: the snapshot was pruned or never made


def change_rows(snapshot: SnapshotRecord | None, folder: Folder | None, entity: str = "", action: str = "",
                sourced_id: str = "", page: int = 1) -> ChangeRows:  # fmt: skip
    """One page of a change set's rows of one entity and action, those whose sourcedId holds `sourced_id`.
    `folder` is where the snapshot is read from (None: pruned, or whole nowhere)."""
    counts = snapshot.changes if snapshot else {}
    changes = f"{storage.CHANGES_FOLDER}/"
    if snapshot is None or snapshot.pruned_at or folder is None or not storage.has_file(folder, changes + COUNTS_FILE):
        return ChangeRows(entity, action, [], 0, 1, 1, counts, False)
    entities = entity_order(counts)
    entity = entity if entity in counts else next((e for e in entities if sum(counts[e].values())), "")
    action = action if action in ACTIONS else next((a for a in ACTIONS if counts.get(entity, {}).get(a)), "added")
    name = f"{changes}{entity}.{action}.parquet"
    if not entity or not storage.has_file(folder, name):
        return ChangeRows(entity, action, [], 0, 1, 1, counts, True)
    frame = storage.scan_file(folder, name)
    if sourced_id:
        frame = frame.filter(pl.col("sourcedId").cast(pl.String).str.contains(sourced_id, literal=True))
    total = frame.select(pl.len()).collect().item()
    pages = max(1, -(-total // PAGE_ROWS))
    page = min(max(1, page), pages)
    rows = [_change_row(row, action) for row in frame.slice((page - 1) * PAGE_ROWS, PAGE_ROWS).collect().to_dicts()]
    return ChangeRows(entity, action, rows, total, page, pages, counts, True)


def _change_row(row: dict, action: str) -> dict:
    shown = {"sourcedId": row.get("sourcedId")}
    if action == "updated":
        shown["changed"] = [{**c, "old": REDACTED, "new": REDACTED} if c["field"] in SECRET_COLUMNS else c
                            for c in row.get(CHANGED) or []]  # fmt: skip
    else:
        shown["fields"] = {k: (REDACTED if k in SECRET_COLUMNS else _text(v)) for k, v in row.items()
                           if not k.startswith("_") and k not in ("sourcedId", CHANGED) and v not in (None, "")}
    return shown


def _text(value: object) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


# -- deliveries and targets ---------------------------------------------------------------------------


def deliveries(store: StoreInterface, tenant: str, target: str, limit: int = 100) -> list[Delivery]:
    return [d for d in store.deliveries(tenant, limit=limit * 4) if d.target == target][:limit]


# -- settings ------------------------------------------------------------------------------------------


def redacted_settings(settings: Settings) -> str:
    """The effective configuration as JSON, every secret value replaced (secret sources stay named)."""
    return json.dumps(_redact(settings.model_dump(mode="json")), indent=2, sort_keys=False)


def _redact(value: object, key: str = "") -> object:
    if key in SECRET_SETTINGS and value:
        return REDACTED
    if isinstance(value, dict):
        return {k: _redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, key) for v in value]
    return value


def utc_now() -> datetime:
    return datetime.now(UTC)
