"""A fake edtech vendor receiving rosterd's roster webhooks, for tests of the webhook target.

It keeps the delivery contract (one POST per batch of roster changes, signed as Standard Webhooks
describes in /work/shared/reference/sync_anchors.md section 6.4) strictly, so a sender cannot pass
here by luck: the signature is checked in constant time against every `v1` entry of the header, a
timestamp outside the tolerance is refused, a body is refused unless every key, type and enum is
right, and a webhook-id already processed is answered 200 but never applied twice.

What a vendor would accept but a correct rosterd should never cause is recorded in `anomalies`
rather than refused: batches of an upload out of order, uploads of one tenant interleaved, an update
of a record the vendor never saw, a retry under the same webhook-id with different bytes, the same
batch again under a new webhook-id. Each anomaly and each refusal reason starts with a stable dotted
code (`order.batch`, `signature.mismatch`, ...) followed by a readable detail.

A test arranges trouble through `faults`: each request pops the first one, after the request has
been recorded and before anything is checked.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass, field

from aiohttp import hdrs, web

from tests.fakes import service
from tests.fakes.service import FakeService, Seen, drop_connection, is_rate_limit, retry_after

PATH = "/hooks/roster"
EVENT_TYPE = "roster.changed"
ENTITIES = frozenset(
    {"user", "class", "enrollment", "org", "course", "academicSession", "demographic", "role", "userProfile"}
)
ACTIONS = frozenset({"created", "updated", "deleted"})
MAX_EVENTS = 10_000
FAULTS = (*service.FAULTS, "410", "400")
SECRET_PREFIX = "whsec_"
_BODY_KEYS = {"id": str, "type": str, "tenant": str, "upload_id": str, "batch": int, "batches": int, "events": list}
_DIGITS = re.compile(r"[0-9]{1,12}")
_MAX_BODY = 64 * 1024 * 1024  # 10,000 events of full OneRoster records fit; aiohttp's default 1 MiB does not


def signing_key(secret: str) -> bytes:
    """The HMAC key: a `whsec_` secret is base64 after the prefix; any other secret is its UTF-8 bytes."""
    if secret.startswith(SECRET_PREFIX):
        try:
            key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        except binascii.Error as exc:
            raise ValueError("a whsec_ secret must be base64 after the prefix") from exc
    else:
        key = secret.encode()
    if not key:
        raise ValueError("an empty signing secret")
    return key


def signature_matches(key: bytes, webhook_id: str, timestamp: str, body: bytes, header: str) -> bool:
    """Whether any `v1,<base64>` entry of the header is the HMAC-SHA256 of `{id}.{timestamp}.{body}`."""
    expected = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    matched = False
    for entry in header.split():
        version, _, encoded = entry.partition(",")
        if version != "v1":  # v1a (ed25519) and unknown versions are skipped, as the spec asks
            continue
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        matched |= hmac.compare_digest(candidate, expected)  # no early exit: every entry costs the same
    return matched


# ---------------------------------------------------------------------------------------------------
# The body: what a batch must look like before the vendor applies any of it.


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise Refused(400, f"body.duplicate_key: an object repeats a key among {sorted(keys)}")
    return dict(pairs)


def _not_json_constant(name: str) -> None:
    raise Refused(400, f"body.not_json: {name} is not JSON")  # Python's json.dumps writes NaN by default


def _is(value: object, kind: type) -> bool:
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def parse_batch(body: bytes) -> dict:
    """The batch as a dict, or Refused(400) naming the first thing wrong with it."""
    try:
        batch = json.loads(
            body.decode("utf-8"), object_pairs_hook=_no_duplicate_keys, parse_constant=_not_json_constant
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(400, f"body.not_json: {exc}") from exc
    if not isinstance(batch, dict):
        raise Refused(400, f"body.not_object: the body is a JSON {type(batch).__name__}")
    for key, kind in _BODY_KEYS.items():
        if key not in batch:
            raise Refused(400, f"body.missing_key: {key}")
        if not _is(batch[key], kind):
            raise Refused(400, f"body.wrong_type: {key} is {type(batch[key]).__name__}, expected {kind.__name__}")
        if kind is str and not batch[key].strip():
            raise Refused(400, f"body.empty: {key}")
    if batch["type"] != EVENT_TYPE:
        raise Refused(400, f"body.bad_type: type is {batch['type']!r}, expected {EVENT_TYPE!r}")
    if not 1 <= batch["batch"] <= batch["batches"]:
        raise Refused(400, f"body.batch_range: batch {batch['batch']} of {batch['batches']}")
    if len(batch["events"]) > MAX_EVENTS:
        raise Refused(400, f"body.too_many_events: {len(batch['events'])} events, at most {MAX_EVENTS}")
    for index, event in enumerate(batch["events"]):
        _check_event(f"events[{index}]", event)
    return batch


def _check_event(where: str, event: object) -> None:
    if not isinstance(event, dict):
        raise Refused(400, f"event.not_object: {where}")
    entity, action, sourced_id = event.get("entity"), event.get("action"), event.get("sourcedId")
    if not isinstance(entity, str) or entity not in ENTITIES:
        raise Refused(400, f"event.bad_entity: {where}.entity is {entity!r}")
    if not isinstance(action, str) or action not in ACTIONS:
        raise Refused(400, f"event.bad_action: {where}.action is {action!r}")
    if not isinstance(sourced_id, str) or not sourced_id.strip():
        raise Refused(400, f"event.bad_sourced_id: {where}.sourcedId is {sourced_id!r}")
    if action != "deleted" or "data" in event:  # a deletion may leave the record out
        data = event.get("data")
        if not isinstance(data, dict):
            raise Refused(400, f"event.bad_data: {where}.data must be an object")
        if "sourcedId" in data and data["sourcedId"] != sourced_id:
            raise Refused(400, f"event.sourced_id_mismatch: {where}.data.sourcedId is {data['sourcedId']!r}")
    if action == "updated":
        changed = event.get("changed")
        if (
            not isinstance(changed, list)
            or not changed
            or not all(isinstance(name, str) and name for name in changed)
            or len(set(changed)) != len(changed)
        ):
            raise Refused(400, f"event.bad_changed: {where}.changed must list the changed field names, each once")
    elif "changed" in event:
        raise Refused(400, f"event.changed_not_updated: {where} is {action} but has changed")


# ---------------------------------------------------------------------------------------------------
# The HTTP service.


@dataclass
class SeenRequest(Seen):
    webhook_id: str | None
    timestamp: str | None
    signature_ok: bool  # some v1 signature matched (the timestamp is judged apart: see `rejected`)
    body: bytes = field(repr=False)


@dataclass
class _Upload:
    tenant: str
    batches: int
    received: set[int] = field(default_factory=set)

    @property
    def due(self) -> int:
        """The lowest batch number not yet received."""
        return next(number for number in range(1, len(self.received) + 2) if number not in self.received)

    @property
    def complete(self) -> bool:
        return self.received >= set(range(1, self.batches + 1))


class WebhookReceiver(FakeService):
    def __init__(self, secret: str, *, tolerance_seconds: int = 300, hang_seconds: float = 30.0) -> None:
        super().__init__(hang_seconds=hang_seconds)
        self.secret = secret
        self.tolerance_seconds = tolerance_seconds
        self.url = ""
        self.batches: list[dict] = []
        self.duplicates = 0
        self.rejected: list[tuple[str, str]] = []
        self.anomalies: list[str] = []
        self._bodies: dict[str, bytes] = {}  # webhook-id -> the bytes processed under it
        self._state: dict[str, dict[str, dict]] = {}
        self._uploads: dict[str, _Upload] = {}
        self._tenant_uploads: dict[str, list[str]] = {}  # tenant -> upload ids in the order first seen

    @property
    def secret(self) -> str:
        return self._secret

    @secret.setter
    def secret(self, value: str) -> None:
        """The vendor may rotate its secret between requests; a bad secret fails here, not in a request."""
        self._key = signing_key(value)
        self._secret = value

    def events(self) -> list[dict]:
        return [event for batch in self.batches for event in batch["events"]]

    def state(self) -> dict[str, dict[str, dict]]:
        """The vendor's records now, per entity (entities with no records left out); a copy."""
        return {entity: copy.deepcopy(records) for entity, records in self._state.items() if records}

    async def start(self) -> str:
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_post(PATH, self._receive)
        self.url = await self._serve(app) + PATH
        return self.url

    # --- one delivery

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        webhook_id = request.headers.get("webhook-id")
        timestamp = request.headers.get("webhook-timestamp")
        signature = request.headers.get("webhook-signature")
        signed = webhook_id is not None and timestamp is not None and signature is not None
        seen = self._record(SeenRequest(
            webhook_id, timestamp, signed and signature_matches(self._key, webhook_id, timestamp, body, signature), body
        ))  # fmt: skip
        if seen.fault == "reset":
            drop_connection(request)
            return web.Response()  # goes nowhere
        response = _fault_answer(seen.fault) or self._deliver(request, seen, signature, body)
        seen.status = response.status  # for "timeout", what the sender would get if it waited
        if seen.fault == "timeout":  # the batch is processed; only the answer is late
            await self._hang()
        return response

    def _deliver(self, request: web.Request, seen: SeenRequest, signature: str | None, body: bytes) -> web.Response:
        webhook_id = seen.webhook_id or ""
        try:
            self._verify(seen, signature)
            if webhook_id in self._bodies:
                return self._repeat(webhook_id, body)
            if request.content_type != "application/json" or (request.charset or "utf-8").lower() != "utf-8":
                raise Refused(400, f"body.content_type: {request.headers.get(hdrs.CONTENT_TYPE)!r}")
            batch = parse_batch(body)
        except Refused as refusal:
            self.rejected.append((webhook_id, refusal.reason))
            return web.json_response({"error": refusal.reason}, status=refusal.status)
        self._process(webhook_id, body, batch)
        return web.json_response({"received": webhook_id, "events": len(batch["events"])})

    def _verify(self, seen: SeenRequest, signature: str | None) -> None:
        for name, value in (("webhook-id", seen.webhook_id), ("webhook-timestamp", seen.timestamp),
                            ("webhook-signature", signature)):  # fmt: skip
            if not value or not value.strip():
                raise Refused(401, f"signature.missing_header: {name}")
        if not _DIGITS.fullmatch(seen.timestamp):
            raise Refused(401, f"signature.bad_timestamp: {seen.timestamp!r} is not unix seconds")
        skew = int(seen.timestamp) - time.time()
        if abs(skew) > self.tolerance_seconds:
            raise Refused(
                401, f"signature.stale_timestamp: {skew:+.0f} s from now, tolerance {self.tolerance_seconds} s"
            )
        if not any(entry.startswith("v1,") for entry in signature.split()):
            raise Refused(401, "signature.no_v1: webhook-signature has no v1 entry")
        if not seen.signature_ok:
            raise Refused(401, "signature.mismatch: no v1 signature matches the secret")

    def _repeat(self, webhook_id: str, body: bytes) -> web.Response:
        self.duplicates += 1
        if body != self._bodies[webhook_id]:
            self.anomalies.append(f"duplicate.body_changed: webhook-id {webhook_id} was sent again with other bytes")
        return web.json_response({"received": webhook_id, "duplicate": True})

    def _process(self, webhook_id: str, body: bytes, batch: dict) -> None:
        self._bodies[webhook_id] = body
        self.batches.append(batch)
        if batch["id"] != webhook_id:
            self.anomalies.append(f"id.mismatch: body id {batch['id']!r} under webhook-id {webhook_id!r}")
        self._check_order(webhook_id, batch)
        for event in batch["events"]:
            self._apply(event)

    def _check_order(self, webhook_id: str, batch: dict) -> None:
        upload_id, tenant, number = batch["upload_id"], batch["tenant"], batch["batch"]
        where = f"upload {upload_id} (tenant {tenant})"
        upload = self._uploads.get(upload_id)
        if upload is None:
            seen = self._tenant_uploads.setdefault(tenant, [])
            if seen and not self._uploads[seen[-1]].complete:
                earlier = self._uploads[seen[-1]]
                self.anomalies.append(
                    f"order.upload_interleaved: {where} began before upload {seen[-1]} was complete "
                    f"({len(earlier.received)} of {earlier.batches} batches)"
                )
            seen.append(upload_id)
            upload = self._uploads[upload_id] = _Upload(tenant, batch["batches"])
        else:
            if upload.tenant != tenant:
                self.anomalies.append(f"upload.tenant_changed: {where} was first sent for tenant {upload.tenant}")
            if upload.batches != batch["batches"]:
                self.anomalies.append(
                    f"upload.batches_changed: {where} had {upload.batches} batches, now {batch['batches']}"
                )
            current = self._tenant_uploads[upload.tenant][-1]
            if current != upload_id:
                self.anomalies.append(
                    f"order.upload_interleaved: batch {number} of {where} came after upload {current} began"
                )
        if number in upload.received:
            self.anomalies.append(
                f"duplicate.batch: batch {number} of {where} came again under a new webhook-id {webhook_id}"
            )
        elif number != upload.due:
            self.anomalies.append(f"order.batch: batch {number} of {where} came when batch {upload.due} was due")
        upload.received.add(number)

    def _apply(self, event: dict) -> None:
        records = self._state.setdefault(event["entity"], {})
        sourced_id, action = event["sourcedId"], event["action"]
        what = f"{event['entity']} {sourced_id}"
        known = sourced_id in records
        if action == "created" and known:
            self.anomalies.append(f"state.created_known: {what} was created but the vendor already has it")
        elif action == "updated" and not known:
            self.anomalies.append(f"state.updated_unknown: {what} was updated but the vendor never had it")
        elif action == "deleted" and not known:
            self.anomalies.append(f"state.deleted_unknown: {what} was deleted but the vendor never had it")
        if action == "deleted":
            records.pop(sourced_id, None)
        else:
            records[sourced_id] = copy.deepcopy(event["data"])


def _fault_answer(fault: str | None) -> web.Response | None:
    """The answer a fault forces, with nothing processed; None when the request is handled as usual."""
    if fault in (None, "timeout"):
        return None
    if fault == "500":
        return web.json_response({"error": "internal server error"}, status=500)
    if fault == "503":
        return web.Response(status=503, text="Service Unavailable")
    if fault == "400":
        return web.json_response({"error": "bad request"}, status=400)
    if fault == "410":
        return web.json_response({"error": "gone: this endpoint takes no more deliveries"}, status=410)
    if is_rate_limit(fault):
        return web.json_response({"error": "too many requests"}, status=429, headers=retry_after(fault))
    raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
