"""The fake vendor keeps the webhook contract: signatures, idempotency, body rules, faults, order and state."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDictProxy

from tests.fakes.webhooks import WebhookReceiver, signature_matches, signing_key

SECRET = "a plain secret of more than twenty-four bytes"
WHSEC = "whsec_" + base64.b64encode(bytes(range(32))).decode()


def mac(secret: str, webhook_id: str, timestamp: int | str, body: bytes) -> str:
    """One `v1,` signature made here, independently of the fake, from the Standard Webhooks recipe."""
    key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode("utf-8")
    signed = b".".join((webhook_id.encode(), str(timestamp).encode(), body))
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def batch(*events: dict, upload: str = "up-1", number: int = 1, total: int = 1, tenant: str = "district-7") -> dict:
    return {
        "id": f"{upload}.{number}",
        "type": "roster.changed",
        "tenant": tenant,
        "upload_id": upload,
        "batch": number,
        "batches": total,
        "events": list(events),
    }


def created(sourced_id: str, entity: str = "user", **data) -> dict:
    return {"entity": entity, "action": "created", "sourcedId": sourced_id, "data": {"sourcedId": sourced_id, **data}}


def updated(sourced_id: str, changed: list[str], entity: str = "user", **data) -> dict:
    return {**created(sourced_id, entity, **data), "action": "updated", "changed": changed}


def deleted(sourced_id: str, entity: str = "user") -> dict:
    return {"entity": entity, "action": "deleted", "sourcedId": sourced_id}


async def deliver(
    http: aiohttp.ClientSession,
    receiver: WebhookReceiver,
    payload: dict | bytes,
    *,
    webhook_id: str | None = None,
    secrets: tuple[str, ...] = (SECRET,),
    timestamp: int | None = None,
    headers: dict | None = None,
    drop: tuple[str, ...] = (),
    **options,
) -> tuple[int, object, CIMultiDictProxy[str]]:
    """POST one batch as rosterd would; `headers` override and `drop` leaves out the named headers."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    webhook_id = webhook_id or (payload["id"] if isinstance(payload, dict) else "msg-raw")
    timestamp = int(time.time()) if timestamp is None else timestamp
    sent = {
        "Content-Type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(mac(secret, webhook_id, timestamp, body) for secret in secrets),
        **(headers or {}),
    }
    sent = {name: value for name, value in sent.items() if name not in drop}
    async with http.post(receiver.url, data=body, headers=sent, **options) as response:
        answer = await response.json() if response.content_type == "application/json" else await response.text()
        return response.status, answer, response.headers


@pytest.fixture
async def start_receiver():
    started: list[WebhookReceiver] = []

    async def start(secret: str = SECRET, **options) -> WebhookReceiver:
        receiver = WebhookReceiver(secret, **options)
        await receiver.start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        await receiver.close()


@pytest.fixture
async def receiver(start_receiver) -> WebhookReceiver:
    return await start_receiver()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def nothing_processed(receiver: WebhookReceiver) -> bool:
    return receiver.batches == [] and receiver.state() == {} and receiver.anomalies == []


def clean(receiver: WebhookReceiver) -> bool:
    """Nothing flagged and nothing refused: what every correct sender leaves behind."""
    return receiver.anomalies == [] and receiver.rejected == []


def refusals(receiver: WebhookReceiver) -> list[str]:
    """The codes of the refusals, in order."""
    return [reason.split(":")[0] for _, reason in receiver.rejected]


# --- delivery and idempotency


async def test_a_signed_batch_is_processed_and_the_state_shows_it(receiver, http):
    assert receiver.url.startswith("http://127.0.0.1:") and receiver.url.endswith("/hooks/roster")
    sent = batch(
        created("u1", givenName="Ada", familyName="Lovelace"),
        created("c1", "class", title="Math 7"),
        created("e1", "enrollment", classSourcedId="c1", userSourcedId="u1", role="student"),
    )
    status, answer, _ = await deliver(http, receiver, sent)
    assert status == 200 and answer == {"received": "up-1.1", "events": 3}
    assert receiver.batches == [sent] and receiver.events() == sent["events"]
    assert receiver.state() == {
        "user": {"u1": {"sourcedId": "u1", "givenName": "Ada", "familyName": "Lovelace"}},
        "class": {"c1": {"sourcedId": "c1", "title": "Math 7"}},
        "enrollment": {"e1": {"sourcedId": "e1", "classSourcedId": "c1", "userSourcedId": "u1", "role": "student"}},
    }
    [seen] = receiver.requests
    assert (seen.webhook_id, seen.status, seen.signature_ok, seen.fault) == ("up-1.1", 200, True, None)
    assert receiver.anomalies == [] and receiver.rejected == [] and receiver.duplicates == 0


async def test_updates_and_deletes_apply_in_order(receiver, http):
    await deliver(http, receiver, batch(created("u1", givenName="Ada"), created("u2", givenName="Bo"), total=2))
    await deliver(http, receiver, batch(updated("u1", ["givenName"], givenName="Ada K."), deleted("u2"),
                                        number=2, total=2))  # fmt: skip
    assert receiver.state() == {"user": {"u1": {"sourcedId": "u1", "givenName": "Ada K."}}}
    await deliver(http, receiver, batch(deleted("u1"), upload="up-2"))
    assert receiver.state() == {} and clean(receiver)


async def test_state_is_a_copy(receiver, http):
    await deliver(http, receiver, batch(created("u1", givenName="Ada")))
    receiver.state()["user"]["u1"]["givenName"] = "changed"
    assert receiver.state()["user"]["u1"]["givenName"] == "Ada" and clean(receiver)


async def test_a_repeat_of_the_same_webhook_id_is_answered_but_processed_once(receiver, http):
    sent = batch(created("u1"))
    body = json.dumps(sent).encode()
    first = await deliver(http, receiver, body, webhook_id="up-1.1")
    again = await deliver(http, receiver, body, webhook_id="up-1.1", timestamp=int(time.time()) + 1)
    assert (first[0], again[0], again[1]) == (200, 200, {"received": "up-1.1", "duplicate": True})
    assert receiver.batches == [sent] and receiver.duplicates == 1
    assert clean(receiver)  # the same bytes again: no created_known either


async def test_a_repeat_with_other_bytes_is_an_anomaly(receiver, http):
    await deliver(http, receiver, batch(created("u1")))
    status, _, _ = await deliver(http, receiver, batch(created("u1"), created("u2")))
    assert status == 200 and len(receiver.batches) == 1 and receiver.duplicates == 1
    assert [a.split(":")[0] for a in receiver.anomalies] == ["duplicate.body_changed"] and receiver.rejected == []


async def test_the_same_batch_under_a_new_webhook_id_is_processed_again_and_flagged(receiver, http):
    await deliver(http, receiver, batch(created("u1")))
    await deliver(http, receiver, batch(created("u1")), webhook_id="another-id")
    assert len(receiver.batches) == 2 and receiver.duplicates == 0
    assert [a.split(":")[0] for a in receiver.anomalies] == ["id.mismatch", "duplicate.batch", "state.created_known"]
    assert receiver.rejected == []


# --- signatures


async def test_a_bad_signature_is_refused_and_nothing_processed(receiver, http):
    status, answer, _ = await deliver(http, receiver, batch(created("u1")), secrets=("not the secret at all",))
    assert status == 401 and answer["error"].startswith("signature.mismatch")
    assert receiver.rejected == [("up-1.1", answer["error"])] and nothing_processed(receiver)
    assert receiver.requests[0].signature_ok is False


async def test_a_body_changed_after_signing_is_refused(receiver, http):
    body = json.dumps(batch(created("u1"))).encode()
    timestamp = int(time.time())
    signature = mac(SECRET, "up-1.1", timestamp, body)
    tampered = body.replace(b'"u1"', b'"u2"')
    status, _, _ = await deliver(http, receiver, tampered, webhook_id="up-1.1", timestamp=timestamp,
                                 headers={"webhook-signature": signature})  # fmt: skip
    assert status == 401 and nothing_processed(receiver) and refusals(receiver) == ["signature.mismatch"]


async def test_the_signature_covers_the_webhook_id_and_timestamp(receiver, http):
    body = json.dumps(batch(created("u1"))).encode()
    timestamp = int(time.time())
    for webhook_id, signed_at in (("other-id", timestamp), ("up-1.1", timestamp - 1)):
        signature = mac(SECRET, webhook_id, signed_at, body)
        status, _, _ = await deliver(http, receiver, body, webhook_id="up-1.1", timestamp=timestamp,
                                     headers={"webhook-signature": signature})  # fmt: skip
        assert status == 401
    assert nothing_processed(receiver) and refusals(receiver) == ["signature.mismatch"] * 2


@pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp", "webhook-signature"])
@pytest.mark.parametrize("how", ["absent", "empty"])
async def test_a_missing_header_is_refused(receiver, http, header, how):
    left_out = {"drop": (header,)} if how == "absent" else {"headers": {header: ""}}
    status, answer, _ = await deliver(http, receiver, batch(created("u1")), **left_out)
    assert status == 401 and answer["error"] == f"signature.missing_header: {header}"
    assert nothing_processed(receiver) and receiver.requests[0].signature_ok is False
    assert [reason for _, reason in receiver.rejected] == [answer["error"]]


@pytest.mark.parametrize("skew", [-305, 305, -3600])  # clear of the tolerance however the second is cut
async def test_a_timestamp_outside_the_tolerance_is_refused(receiver, http, skew):
    status, answer, _ = await deliver(http, receiver, batch(created("u1")), timestamp=int(time.time()) + skew)
    assert status == 401 and answer["error"].startswith("signature.stale_timestamp")
    assert receiver.requests[0].signature_ok is True  # well signed, but too old or too new
    assert nothing_processed(receiver) and receiver.rejected == [("up-1.1", answer["error"])]


async def test_a_timestamp_just_inside_a_custom_tolerance_passes(start_receiver, http):
    receiver = await start_receiver(tolerance_seconds=10)
    assert (await deliver(http, receiver, batch(created("u1")), timestamp=int(time.time()) - 8))[0] == 200
    assert (await deliver(http, receiver, batch(created("u2"), upload="up-2"),
                          timestamp=int(time.time()) - 20))[0] == 401  # fmt: skip
    assert refusals(receiver) == ["signature.stale_timestamp"] and receiver.anomalies == []


@pytest.mark.parametrize("timestamp", ["soon", "1.7e9", "-5", "+1700000000", "１２３"])
async def test_a_timestamp_that_is_not_unix_seconds_is_refused(receiver, http, timestamp):
    status, answer, _ = await deliver(http, receiver, batch(created("u1")), headers={"webhook-timestamp": timestamp})
    assert status == 401 and answer["error"].split(":")[0] == "signature.bad_timestamp"
    assert nothing_processed(receiver) and receiver.rejected == [("up-1.1", answer["error"])]


async def test_a_whsec_secret_signs_with_its_decoded_bytes(start_receiver, http):
    receiver = await start_receiver(WHSEC)
    assert (await deliver(http, receiver, batch(created("u1")), secrets=(WHSEC,)))[0] == 200
    body = json.dumps(batch(created("u2"), upload="up-2")).encode()
    timestamp = int(time.time())
    raw = hmac.new(WHSEC.encode(), f"up-2.1.{timestamp}.".encode() + body, hashlib.sha256).digest()
    status, _, _ = await deliver(http, receiver, body, webhook_id="up-2.1", timestamp=timestamp,
                                 headers={"webhook-signature": "v1," + base64.b64encode(raw).decode()})  # fmt: skip
    assert status == 401 and list(receiver.state()["user"]) == ["u1"]
    assert refusals(receiver) == ["signature.mismatch"] and receiver.anomalies == []


async def test_any_listed_signature_may_match_during_a_rotation(receiver, http):
    old, new = "the old secret, retired next week", SECRET
    assert (await deliver(http, receiver, batch(created("u1")), secrets=(old, new)))[0] == 200
    receiver.secret = old  # the vendor has not switched yet: the old entry matches
    assert (await deliver(http, receiver, batch(created("u2"), upload="up-2"), secrets=(old, new)))[0] == 200
    receiver.secret = WHSEC
    status, answer, _ = await deliver(http, receiver, batch(created("u3"), upload="up-3"), secrets=(old, new))
    assert status == 401 and answer["error"].startswith("signature.mismatch")
    assert sorted(receiver.state()["user"]) == ["u1", "u2"]
    assert refusals(receiver) == ["signature.mismatch"] and receiver.anomalies == []


async def test_only_v1_entries_count(receiver, http):
    body = json.dumps(batch(created("u1"))).encode()
    timestamp = int(time.time())
    good = mac(SECRET, "up-1.1", timestamp, body).removeprefix("v1,")
    for header in (f"v1a,{good}", f"v2,{good}", good, "v1,!!not-base64!!"):
        status, answer, _ = await deliver(http, receiver, body, webhook_id="up-1.1", timestamp=timestamp,
                                          headers={"webhook-signature": header})  # fmt: skip
        assert status == 401, header
    assert [reason.split(":")[0] for _, reason in receiver.rejected] == [
        "signature.no_v1", "signature.no_v1", "signature.no_v1", "signature.mismatch"
    ]
    status, _, _ = await deliver(http, receiver, body, webhook_id="up-1.1", timestamp=timestamp,
                                 headers={"webhook-signature": f"v1a,{good} v1,{good}"})  # fmt: skip
    assert status == 200 and len(receiver.rejected) == 4 and receiver.anomalies == []


def test_a_secret_that_cannot_sign_is_refused_at_once():
    for secret in ("whsec_not*base64", "", "whsec_"):
        with pytest.raises(ValueError):
            WebhookReceiver(secret)


@settings(max_examples=60, deadline=None)
@given(key=st.binary(min_size=24, max_size=64), webhook_id=st.text(min_size=1, max_size=30).filter(str.strip),
       timestamp=st.integers(0, 2**40), body=st.binary(max_size=200), flip=st.integers(0, 10_000))  # fmt: skip
def test_signature_check_agrees_with_an_independent_signer(key, webhook_id, timestamp, body, flip):
    secret = "whsec_" + base64.b64encode(key).decode()
    assert signing_key(secret) == key
    header = mac(secret, webhook_id, timestamp, body)
    assert signature_matches(key, webhook_id, str(timestamp), body, header)
    if body:
        position = flip % len(body)
        altered = body[:position] + bytes([body[position] ^ 1]) + body[position + 1:]
        assert not signature_matches(key, webhook_id, str(timestamp), altered, header)


# --- bodies


def _without(key: str) -> dict:
    sent = batch(created("u1"))
    del sent[key]
    return sent


def _without_changed(event: dict) -> dict:
    return {key: value for key, value in event.items() if key != "changed"}


MALFORMED = {  # what is sent, and the code its refusal must carry
    "not JSON": (b"{not json", "body.not_json"),
    "not UTF-8": (b'{"id": "\xff"}', "body.not_json"),
    "NaN": (json.dumps(batch(created("u1", score=float("nan")))).encode(), "body.not_json"),
    "a list": (b"[]", "body.not_object"),
    "duplicate key": (b'{"id": "a", "id": "b"}', "body.duplicate_key"),
    "no id": (_without("id"), "body.missing_key"),
    "no events": (_without("events"), "body.missing_key"),
    "no upload_id": (_without("upload_id"), "body.missing_key"),
    "empty tenant": ({**batch(created("u1")), "tenant": ""}, "body.empty"),
    "batch as text": ({**batch(created("u1")), "batch": "1"}, "body.wrong_type"),
    "batch as bool": ({**batch(created("u1")), "batch": True}, "body.wrong_type"),
    "batch 0": ({**batch(created("u1")), "batch": 0}, "body.batch_range"),
    "batch after the last": (batch(created("u1"), number=3, total=2), "body.batch_range"),
    "other type": ({**batch(created("u1")), "type": "user.created"}, "body.bad_type"),
    "events as object": ({**batch(), "events": {}}, "body.wrong_type"),
    "too many events": (batch(*(created(f"u{n}") for n in range(10_001))), "body.too_many_events"),
    "event not an object": (batch("u1"), "event.not_object"),
    "unknown entity": (batch(created("u1", entity="users")), "event.bad_entity"),
    "unknown action": (batch({**created("u1"), "action": "upserted"}), "event.bad_action"),
    "empty sourcedId": (batch(created(" ")), "event.bad_sourced_id"),
    "sourcedId as number": (batch({**created("u1"), "sourcedId": 1}), "event.bad_sourced_id"),
    "data not an object": (batch({**created("u1"), "data": []}), "event.bad_data"),
    "created without data": (batch({"entity": "user", "action": "created", "sourcedId": "u1"}), "event.bad_data"),
    "data for another record": (batch({**created("u1"), "data": {"sourcedId": "u2"}}), "event.sourced_id_mismatch"),
    "changed on created": (batch({**created("u1"), "changed": ["givenName"]}), "event.changed_not_updated"),
    "changed on deleted": (batch({**deleted("u1"), "changed": ["givenName"]}), "event.changed_not_updated"),
    "updated without changed": (batch(_without_changed(updated("u1", ["x"]))), "event.bad_changed"),
    "updated with empty changed": (batch(updated("u1", [])), "event.bad_changed"),
    "changed repeats a field": (batch(updated("u1", ["givenName", "givenName"])), "event.bad_changed"),
}


@pytest.mark.parametrize(("payload", "code"), MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_body_is_refused_with_400_and_a_reason(receiver, http, payload, code):
    status, answer, _ = await deliver(http, receiver, payload, webhook_id="msg-1")
    assert status == 400 and receiver.rejected == [("msg-1", answer["error"])]
    assert answer["error"].split(":")[0] == code
    assert nothing_processed(receiver) and receiver.requests[0].signature_ok is True


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/json; charset=latin-1"])  # fmt: skip
async def test_a_body_that_is_not_declared_as_utf8_json_is_refused(receiver, http, content_type):
    status, answer, _ = await deliver(http, receiver, batch(created("u1")), headers={"Content-Type": content_type})
    assert status == 400 and answer["error"].startswith("body.content_type") and nothing_processed(receiver)
    assert receiver.rejected == [("up-1.1", answer["error"])]


async def test_json_with_a_utf8_charset_is_taken(receiver, http):
    headers = {"Content-Type": "application/json; charset=UTF-8"}
    assert (await deliver(http, receiver, batch(created("u1")), headers=headers))[0] == 200
    assert len(receiver.batches) == 1 and clean(receiver)


async def test_a_full_batch_of_ten_thousand_events_is_taken(receiver, http):
    events = [created(f"u{n}", givenName="G" * 50, familyName="F" * 50, email=f"u{n}@example.org")
              for n in range(10_000)]  # fmt: skip
    status, answer, _ = await deliver(http, receiver, batch(*events))
    assert (status, answer["events"], len(receiver.state()["user"])) == (200, 10_000, 10_000)
    assert clean(receiver)


async def test_a_deletion_may_carry_the_record_and_extra_keys_are_tolerated(receiver, http):
    sent = {**batch(created("u1")), "timestamp": "2025-09-01T00:00:00Z"}
    await deliver(http, receiver, sent)
    status, _, _ = await deliver(http, receiver, batch({**deleted("u1"), "data": {"sourcedId": "u1"}}, upload="up-2"))
    assert status == 200 and receiver.state() == {} and clean(receiver)


# --- faults


@pytest.mark.parametrize("fault", ["500", "503", "400", "410"])
async def test_an_error_fault_answers_its_status_and_processes_nothing(receiver, http, fault):
    receiver.faults.append(fault)
    sent = batch(created("u1"))
    status, _, _ = await deliver(http, receiver, sent)
    assert status == int(fault) and nothing_processed(receiver) and receiver.rejected == []
    assert (receiver.requests[0].fault, receiver.requests[0].status) == (fault, int(fault))
    assert (await deliver(http, receiver, sent))[0] == 200  # the retry goes through
    assert receiver.batches == [sent] and receiver.duplicates == 0 and clean(receiver)


async def test_429_may_come_with_or_without_retry_after(receiver, http):
    receiver.faults += ["429", "429:7", "429:Wed, 21 Oct 2026 07:28:00 GMT"]
    answers = [await deliver(http, receiver, batch(created("u1"))) for _ in range(3)]
    assert [status for status, _, _ in answers] == [429, 429, 429]
    assert [headers.get("Retry-After") for _, _, headers in answers] == [None, "7", "Wed, 21 Oct 2026 07:28:00 GMT"]
    assert nothing_processed(receiver) and receiver.rejected == []


async def test_faults_are_used_one_per_request_and_come_before_the_signature_check(receiver, http):
    receiver.faults += ["503", "500"]
    assert (await deliver(http, receiver, batch(created("u1")), secrets=("wrong secret",)))[0] == 503
    assert (await deliver(http, receiver, batch(created("u1"))))[0] == 500
    assert (await deliver(http, receiver, batch(created("u1"))))[0] == 200
    assert receiver.faults == [] and [seen.signature_ok for seen in receiver.requests] == [False, True, True]
    assert clean(receiver)  # the badly signed request met its fault first: never judged


async def test_a_reset_drops_the_connection_without_processing(receiver, http):
    receiver.faults.append("reset")
    with pytest.raises(aiohttp.ClientConnectionError):
        await deliver(http, receiver, batch(created("u1")))
    assert nothing_processed(receiver) and receiver.requests[0].status is None
    assert (await deliver(http, receiver, batch(created("u1"))))[0] == 200
    assert len(receiver.batches) == 1 and receiver.duplicates == 0 and clean(receiver)


async def test_a_timeout_processes_the_batch_then_holds_the_answer(start_receiver, http):
    receiver = await start_receiver(hang_seconds=0.5)
    receiver.faults.append("timeout")
    sent = batch(created("u1"))
    with pytest.raises(TimeoutError):
        await deliver(http, receiver, sent, timeout=aiohttp.ClientTimeout(total=0.1))
    assert receiver.batches == [sent] and "u1" in receiver.state()["user"]
    status, answer, _ = await deliver(http, receiver, sent)  # the retry learns it went through
    assert (status, answer["duplicate"], receiver.duplicates, len(receiver.batches)) == (200, True, 1, 1)
    assert clean(receiver)


async def test_a_timeout_answer_is_held_until_the_vendor_closes(http):
    receiver = WebhookReceiver(SECRET, hang_seconds=600)
    await receiver.start()
    receiver.faults.append("timeout")
    answer = asyncio.create_task(deliver(http, receiver, batch(created("u1"))))
    async with asyncio.timeout(30):
        while not receiver.batches:  # the batch is processed first
            await asyncio.sleep(0.01)
    assert not answer.done() and receiver.requests[0].status == 200  # held: it would come after 600 s
    await receiver.close()
    status, _, _ = await answer  # closing lets it go at once
    assert status == 200 and clean(receiver)


async def test_a_refused_request_under_a_timeout_is_still_refused_late(start_receiver, http):
    receiver = await start_receiver(hang_seconds=0.2)
    receiver.faults.append("timeout")
    assert (await deliver(http, receiver, batch(created("u1")), secrets=("wrong secret",)))[0] == 401
    assert nothing_processed(receiver) and refusals(receiver) == ["signature.mismatch"]


async def test_close_does_not_wait_for_a_held_answer(http):
    receiver = WebhookReceiver(SECRET, hang_seconds=30)
    await receiver.start()
    receiver.faults.append("timeout")
    with pytest.raises(TimeoutError):
        await deliver(http, receiver, batch(created("u1")), timeout=aiohttp.ClientTimeout(total=0.1))
    await asyncio.wait_for(receiver.close(), 5)
    assert len(receiver.batches) == 1 and clean(receiver)


async def test_an_unknown_fault_is_a_test_bug_and_fails_loudly(receiver, http):
    receiver.faults.append("502")
    assert (await deliver(http, receiver, batch(created("u1"))))[0] == 500
    assert nothing_processed(receiver) and receiver.rejected == []


# --- order and state anomalies


def codes(receiver: WebhookReceiver) -> list[str]:
    return [anomaly.split(":")[0] for anomaly in receiver.anomalies]


async def test_batches_in_order_and_uploads_one_after_another_are_clean(receiver, http):
    for number in (1, 2, 3):
        await deliver(http, receiver, batch(created(f"u{number}"), number=number, total=3))
    await deliver(http, receiver, batch(deleted("u1"), upload="up-2"))
    await deliver(http, receiver, batch(created("u9"), upload="other-1", tenant="district-8"))
    assert clean(receiver) and len(receiver.batches) == 5


async def test_an_out_of_order_batch_is_processed_and_flagged(receiver, http):
    await deliver(http, receiver, batch(created("u1"), number=1, total=3))
    await deliver(http, receiver, batch(created("u3"), number=3, total=3))
    await deliver(http, receiver, batch(created("u2"), number=2, total=3))
    assert sorted(receiver.state()["user"]) == ["u1", "u2", "u3"]
    assert receiver.anomalies == ["order.batch: batch 3 of upload up-1 (tenant district-7) came when batch 2 was due"]
    assert receiver.rejected == []


async def test_an_upload_starting_before_the_last_one_finished_is_flagged(receiver, http):
    await deliver(http, receiver, batch(created("u1"), number=1, total=2))
    await deliver(http, receiver, batch(created("u5"), upload="up-2"))
    await deliver(http, receiver, batch(created("u2"), number=2, total=2))
    assert codes(receiver) == ["order.upload_interleaved", "order.upload_interleaved"]
    assert "before upload up-1 was complete (1 of 2 batches)" in receiver.anomalies[0] and receiver.rejected == []


async def test_a_changed_batch_count_and_tenant_are_flagged(receiver, http):
    await deliver(http, receiver, batch(created("u1"), number=1, total=2))
    await deliver(http, receiver, batch(created("u2"), number=2, total=3, tenant="district-8"))
    assert codes(receiver) == ["upload.tenant_changed", "upload.batches_changed"] and receiver.rejected == []


async def test_updates_and_deletes_of_unknown_records_and_repeated_creates_are_flagged(receiver, http):
    await deliver(http, receiver, batch(created("u1"), updated("u2", ["givenName"]), deleted("c9", "class"),
                                        created("u1", givenName="again")))  # fmt: skip
    assert codes(receiver) == ["state.updated_unknown", "state.deleted_unknown", "state.created_known"]
    assert "user u2" in receiver.anomalies[0] and "class c9" in receiver.anomalies[1]
    assert receiver.state() == {"user": {"u1": {"sourcedId": "u1", "givenName": "again"},
                                         "u2": {"sourcedId": "u2"}}}  # fmt: skip
    assert receiver.rejected == []


async def test_a_body_id_other_than_the_webhook_id_is_flagged(receiver, http):
    await deliver(http, receiver, batch(created("u1")), webhook_id="msg_8f2c")
    assert codes(receiver) == ["id.mismatch"] and len(receiver.batches) == 1 and receiver.rejected == []
