"""A webhook target served by two replicas that share a real S3-compatible bucket (SeaweedFS), each with its
own state directory: the replica that takes a delivery over sends what the first one prepared, and the next
delivery is the change from the view the target was sent, whichever replica sent it.

The districts, rosters and the strict webhook receiver are those of tests/test_webhook_target.py."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from daemon.objects.mirror import Mirror
from daemon.objects.s3 import S3Storage
from daemon.outbox import Job
from daemon.store import DeliveryState, Store
from daemon.targets.webhook import WebhookDelivery, prepare
from tests.fakes.webhooks import WebhookReceiver
from tests.objects.seaweed import Seaweed

from .test_webhook_target import (ROSTER, District, assert_clean, deliver_until, edited, of_target, sent, state_of,
                                  store, target_settings, vendor)  # fmt: skip

__all__ = ["store", "vendor"]  # the fixtures, used here as they are there

@pytest.fixture
def bucket(seaweed: Seaweed) -> Iterator[S3Storage]:
    opened = S3Storage(seaweed.bucket, f"webhooks-{secrets.token_hex(6)}", "us-east-1", seaweed.endpoint,
                       seaweed.access_key_id, seaweed.secret)  # fmt: skip
    yield opened
    opened.close()


def replica(name: str, vendor: WebhookReceiver, tmp_path: Path, bucket: S3Storage, **fields) -> WebhookDelivery:
    state = tmp_path / name
    return WebhookDelivery("north", target_settings(vendor, tmp_path, **fields), state, Mirror(bucket, state))


async def test_a_replica_taking_a_delivery_over_sends_what_the_first_one_prepared(
    vendor: WebhookReceiver, store: Store, tmp_path: Path, bucket: S3Storage
) -> None:
    district = District(tmp_path, store)
    district.accept(ROSTER)
    alpha = replica("alpha", vendor, tmp_path, bucket, batch_size=4)
    (delivery,) = of_target(store)
    snapshot = store.snapshot(delivery.upload_id)
    assert snapshot is not None
    with ThreadPoolExecutor(1) as pool:  # alpha prepares, then dies before it sends anything
        await alpha.prepare(Job(delivery, Path(snapshot.path), None, pool), prepare,
                            {"key": delivery.idempotency_key, "tenant": "north", "upload_id": delivery.upload_id,
                             "base_upload_id": None}, 4)  # fmt: skip

    # beta is configured with batches of 10: had it prepared the delivery again, the vendor would get 2
    beta = replica("beta", vendor, tmp_path, bucket, batch_size=10)
    await deliver_until(store, beta, tmp_path)
    (done,) = of_target(store)
    assert done.state is DeliveryState.DELIVERED
    assert [b["batch"] for b in vendor.batches] == [1, 2, 3, 4, 5]  # 20 events, 4 to a batch: alpha's batches
    assert [b["id"] for b in vendor.batches] == [f"{delivery.idempotency_key}.{n}" for n in range(1, 6)]
    assert vendor.state() == state_of(ROSTER)
    assert_clean(vendor)
    keys = {info.key for info in bucket.list("targets/north/vendor/")}
    assert f"targets/north/vendor/{delivery.upload_id}/prepared.json" in keys  # the view kept for the next one
    assert not any("/.staging-" in key for key in keys)  # the prepared delivery left with it


async def test_the_next_delivery_is_the_change_from_the_view_the_other_replica_sent(
    vendor: WebhookReceiver, store: Store, tmp_path: Path, bucket: S3Storage
) -> None:
    district = District(tmp_path, store)
    first = district.accept(ROSTER)
    await deliver_until(store, replica("alpha", vendor, tmp_path, bucket), tmp_path)
    assert len(vendor.events()) == 20  # the whole roster

    district.accept(edited(ROSTER, "users", "t-1", email="t1@staff.north.example"))
    store.mark_pruned(first)  # the first snapshot is gone: only the kept view can say what the vendor has
    beta = replica("beta", vendor, tmp_path, bucket)
    await deliver_until(store, beta, tmp_path)
    latest = of_target(store)[0]
    assert latest.state is DeliveryState.DELIVERED and latest.base_upload_id == first
    assert sent(vendor.batches[-1:]) == [("user", "updated", "t-1")] and len(vendor.events()) == 21  # not all again
    assert_clean(vendor)
