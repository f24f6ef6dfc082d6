"""The webhook target: a vendor's scoped roster changes as signed JSON batches (Standard Webhooks).

Each batch is one POST of at most `batch_size` events:

    {"id": "<tenant>.<target>.<upload_id>.<n>", "type": "roster.changed", "tenant": ..., "upload_id": ...,
     "batch": n, "batches": N, "events": [{"entity": "user", "action": "created" | "updated" | "deleted",
     "sourcedId": ..., "data": {OneRoster fields}, "changed": [fields, updated only]}, ...]}

with the headers `webhook-id` (the batch id: the same on every attempt, so the receiver drops repeats),
`webhook-timestamp` (unix seconds of this attempt) and `webhook-signature` (`v1,` + base64 of the
HMAC-SHA256 of `id.timestamp.body` under the target's secret; a `whsec_` secret is base64 after the prefix).
Creations and updates come in dependency order (orgs before classes before enrollments), deletions after
them in the reverse order. Batches go in order; one that fails stops the delivery, and the next attempt
starts at that batch. 2xx: taken. 410: the vendor wants nothing more, the target is disabled. 429, 408 and
5xx, timeouts and resets: retried (honouring Retry-After). Any other answer: dead.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import aiohttp
import polars as pl

from daemon.files import write_whole
from daemon.http import retry_after_seconds, shortened
from daemon.outbox import Job, Outcome, delivered, permanent, retry
from daemon.snapshots.changes import CHANGED, LIFECYCLE_COLUMNS, ROW_COLUMN
from daemon.objects.mirror import NO_MIRROR, Mirror
from daemon.snapshots.storage import Folder
from daemon.targets import views
from daemon.targets.settings import WebhookTarget

BATCHES = "batches"
EVENT_TYPE = "roster.changed"
SINGULAR = {"orgs": "org", "academicSessions": "academicSession", "courses": "course", "classes": "class",
            "users": "user", "enrollments": "enrollment", "demographics": "demographic", "roles": "role",
            "userProfiles": "userProfile"}  # fmt: skip
ACTION_NAMES = {"added": "created", "updated": "updated", "deleted": "deleted"}


def events(changes) -> pl.Series:
    """Every event of a change set as a JSON text, in sending order."""
    parts = []
    order = list(changes.entities)
    plan = [(e, a) for e in order for a in ("added", "updated")] + [(e, "deleted") for e in reversed(order)]
    for entity, action in plan:
        frame = getattr(changes.entities[entity], action)
        if frame.height == 0:
            continue
        fields = [c for c in frame.columns if c not in (*LIFECYCLE_COLUMNS, ROW_COLUMN, CHANGED)]
        event = {"entity": pl.lit(SINGULAR.get(entity, entity)), "action": pl.lit(ACTION_NAMES[action]),
                 "sourcedId": pl.col("sourcedId"), "data": pl.struct(fields)}  # fmt: skip
        if action == "updated":
            event["changed"] = pl.col(CHANGED).list.eval(pl.element().struct.field("field"))
        parts.append(frame.sort("sourcedId").select(pl.struct(**event).struct.json_encode().alias("event"))["event"])
    return pl.concat(parts) if parts else pl.Series("event", [], dtype=pl.String)


def prepare(snapshot: Folder, base_view: str | None, base_snapshot: Folder | None, scope: dict, today: str,
            folder: str, meta: dict, batch_size: int) -> dict:  # fmt: skip
    """In a worker process: the view, the batches (one JSON file each) and a summary, in a staging folder."""
    staging = Path(folder)
    view, changes, left_out = views.stage_change(staging, snapshot, base_view, base_snapshot, scope, today)
    texts = events(changes)
    count = (texts.len() + batch_size - 1) // batch_size
    (staging / BATCHES).mkdir()
    for n in range(1, count + 1):
        chunk = texts.slice((n - 1) * batch_size, batch_size).to_list()
        head = {"id": f"{meta['key']}.{n}", "type": EVENT_TYPE, "tenant": meta["tenant"], "upload_id": meta["upload_id"],
                "batch": n, "batches": count}  # fmt: skip
        body = _json(head)[:-1] + ',"events":[' + ",".join(chunk) + "]}"
        # on disk before the prepared marker says the staging folder is whole
        write_whole(staging / BATCHES / f"{n:06d}.json", body, mode=None)
    summary = {"batches": count, "events": texts.len(), "base_upload_id": meta["base_upload_id"],
               "counts": {e: c for e, c in changes.counts().items() if any(c.values())}, "left_out": left_out}  # fmt: skip
    views.mark_prepared(staging, summary)
    return summary


def _json(value: dict) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def signing_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode("utf-8")


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


class WebhookDelivery(views.LicenceTarget):
    """The running target (outbox.Target) for one `type = "webhook"` table of a tenant."""

    settings: WebhookTarget

    def __init__(self, tenant: str, settings: WebhookTarget, state_dir: Path, mirror: Mirror = NO_MIRROR) -> None:
        super().__init__(tenant, settings, state_dir, mirror)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def deliver(self, job: Job) -> Outcome:
        d = job.delivery
        meta = {"key": d.idempotency_key, "tenant": self.tenant, "upload_id": d.upload_id,
                "base_upload_id": d.base_upload_id}  # fmt: skip
        summary, reused = await self.prepare(job, prepare, meta, self.settings.batch_size)
        earlier = d.result or {}
        # prepared by an earlier attempt: go on after the batches it got through
        start = earlier.get("batches_delivered", 0) if reused and earlier.get("base_upload_id") == d.base_upload_id else 0
        result = {**summary, "batches_delivered": start}
        try:
            key = signing_key(self.settings.signing.read_secret())
        except Exception as err:  # SecretMissing, or a whsec_ value that is not base64
            return permanent(f"the signing secret cannot be used: {err}", result)
        for n in range(start + 1, summary["batches"] + 1):
            body = await asyncio.to_thread(_read_batch, views.staging(self.folder, d.upload_id), n)
            outcome = await self._post(f"{d.idempotency_key}.{n}", body, key, result)
            if outcome is not None:
                return outcome
            result["batches_delivered"] = n
        await asyncio.to_thread(views.publish, self.folder, d.upload_id, self.mirror)
        return delivered(result)

    async def _post(self, webhook_id: str, body: bytes, key: bytes, result: dict) -> Outcome | None:
        """One batch; None when it was taken, else the outcome that ends this attempt."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        stamp = int(time.time())
        headers = {"Content-Type": "application/json", "webhook-id": webhook_id, "webhook-timestamp": str(stamp),
                   "webhook-signature": signature(key, webhook_id, stamp, body)}  # fmt: skip
        where = f"POST {self.settings.url} (batch {webhook_id})"
        try:
            async with self._session.post(self.settings.url, data=body, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=self.settings.timeout_seconds),
                                          allow_redirects=False) as response:  # fmt: skip
                status, text = response.status, shortened(await response.text(errors="replace"))
                after = retry_after_seconds(response.headers.get("Retry-After"))
        except (TimeoutError, asyncio.TimeoutError):
            return retry(f"{where}: no answer within {self.settings.timeout_seconds:g} s", dict(result))
        except aiohttp.ClientError as err:
            return retry(f"{where}: {type(err).__name__}: {err}", dict(result))
        if 200 <= status < 300:
            return None
        if status == 410:
            return permanent(f"{where}: 410 Gone: the vendor wants no more deliveries; the target is disabled "
                             f"until `rosterd enable-target {self.tenant} {self.name}`", dict(result),
                             disable_target=True)  # fmt: skip
        if status in (408, 429) or status >= 500:
            return retry(f"{where}: HTTP {status} {text}", dict(result), after)
        return permanent(f"{where}: HTTP {status} {text}", dict(result))


def _read_batch(folder: Path, n: int) -> bytes:
    return (folder / BATCHES / f"{n:06d}.json").read_bytes()
