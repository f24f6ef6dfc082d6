"""What every ObjectStorage promises (daemon/objects/interface.py), checked on the local folder and on a real
S3 server alike: the `storage` fixture runs each test once per implementation."""

from __future__ import annotations

import hashlib
import io
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from daemon.objects import ObjectMissing, ObjectStorage

# 0, 1, ..., 255, 0, 1, ...: any slice of it is easy to work out by hand
PATTERN = bytes(range(256))
MIB = 1 << 20


def test_bytes_go_in_and_come_back(storage: ObjectStorage) -> None:
    storage.put_bytes("uploads/north/roster.zip", b"PK\x03\x04 a zip, say")
    storage.put_bytes("empty", b"")
    assert storage.get_bytes("uploads/north/roster.zip") == b"PK\x03\x04 a zip, say"
    assert storage.get_bytes("empty") == b""


def test_a_file_goes_in_and_a_download_comes_back_whole(storage: ObjectStorage, tmp_path: Path) -> None:
    # 9 MiB: above boto3's 8 MiB threshold, so S3 gets it as a multipart upload
    local = tmp_path / "big.bin"
    local.write_bytes(PATTERN * (9 * MIB // 256))
    storage.put_file("snapshots/north/u-1/users.parquet", local)

    target = tmp_path / "out" / "copy.bin"
    target.parent.mkdir()
    storage.download("snapshots/north/u-1/users.parquet", target)

    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(PATTERN * (9 * MIB // 256)).digest()
    assert sorted(p.name for p in target.parent.iterdir()) == ["copy.bin"]  # no partial file left beside it
    assert storage.info("snapshots/north/u-1/users.parquet").size == 9 * MIB


def test_a_download_replaces_a_local_file_whole(storage: ObjectStorage, tmp_path: Path) -> None:
    target = tmp_path / "copy.bin"
    target.write_bytes(b"older and longer than the object")
    storage.put_bytes("k", b"new")
    storage.download("k", target)
    assert target.read_bytes() == b"new"


def test_a_put_replaces_the_object(storage: ObjectStorage) -> None:
    storage.put_bytes("snapshot.json", b'{"version": "1.1"}')
    storage.put_bytes("snapshot.json", b'{"version": "1.2"}')
    assert storage.get_bytes("snapshot.json") == b'{"version": "1.2"}'
    assert [info.key for info in storage.list()] == ["snapshot.json"]


def test_a_reader_sees_the_old_object_or_the_new_one_never_a_mix(storage: ObjectStorage) -> None:
    old, new = b"o" * (128 * 1024), b"n" * (128 * 1024)
    storage.put_bytes("changes/users.parquet", old)
    reading = threading.Event()  # the writer goes on only once the reader reads, so the two overlap

    def write() -> None:
        reading.wait(timeout=30)
        for turn in range(20):
            storage.put_bytes("changes/users.parquet", new if turn % 2 == 0 else old)

    writer = threading.Thread(target=write)
    writer.start()
    reads = 0
    while writer.is_alive() or reads == 0:
        data = storage.get_bytes("changes/users.parquet")
        assert data in (old, new), f"a read saw {len(data)} bytes that are neither version"
        reads += 1
        reading.set()
    writer.join()
    assert storage.get_bytes("changes/users.parquet") == old  # the 20th put (turn 19) wrote `old`


def test_range_reads(storage: ObjectStorage) -> None:
    storage.put_bytes("ten", b"0123456789")
    assert storage.get_range("ten", 0, 4) == b"0123"
    assert storage.get_range("ten", 3, 2) == b"34"
    assert storage.get_range("ten", 7, 100) == b"789"  # past the end: what there is
    assert storage.get_range("ten", 9, 1) == b"9"
    assert storage.get_range("ten", 10, 5) == b""  # starts at the end
    assert storage.get_range("ten", 50, 5) == b""  # starts beyond it
    assert storage.get_range("ten", 4, 0) == b""


def test_range_reads_refuse_negative_numbers(storage: ObjectStorage) -> None:
    storage.put_bytes("ten", b"0123456789")
    with pytest.raises(ValueError):
        storage.get_range("ten", -1, 2)
    with pytest.raises(ValueError):
        storage.get_range("ten", 0, -2)


def test_a_range_read_in_the_middle_of_a_large_object(storage: ObjectStorage) -> None:
    storage.put_bytes("big", PATTERN * (6 * MIB // 256))  # 6 MiB: more than one chunk on SeaweedFS (4 MiB)
    # 3 MiB + 10 is 10 past a multiple of 256, so the range starts at byte value 10 and runs 300 bytes
    expected = bytes(range(10, 256)) + bytes(range(0, 54))
    assert storage.get_range("big", 3 * MIB + 10, 300) == expected
    # across the 4 MiB boundary where SeaweedFS splits its chunks
    assert storage.get_range("big", 4 * MIB - 2, 4) == bytes([254, 255, 0, 1])
    assert storage.get_range("big", 6 * MIB - 3, 1000) == bytes([253, 254, 255])


def test_info_gives_size_and_a_recent_utc_time(storage: ObjectStorage) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)  # S3 keeps whole seconds; clocks are the same machine's
    storage.put_bytes("receipts/north/r.json", b"12345")
    info = storage.info("receipts/north/r.json")
    assert (info.key, info.size) == ("receipts/north/r.json", 5)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", info.modified)
    modified = datetime.fromisoformat(info.modified)
    assert before <= modified <= datetime.now(UTC) + timedelta(seconds=5)
    assert storage.info("receipts/north/other.json") is None
    assert storage.info("receipts/north") is None  # a folder (local) or a mere prefix (S3) is not an object


KEYS = ["a/b/c.txt", "a/b/d.txt", "a/bc.txt", "a/e/f.txt", "z.txt"]


def test_list_takes_a_plain_prefix_and_sorts_by_key(storage: ObjectStorage) -> None:
    for key in reversed(KEYS):
        storage.put_bytes(key, key.encode())
    assert [info.key for info in storage.list()] == KEYS
    assert [info.key for info in storage.list("a/b")] == ["a/b/c.txt", "a/b/d.txt", "a/bc.txt"]
    assert [info.key for info in storage.list("a/b/")] == ["a/b/c.txt", "a/b/d.txt"]
    assert [info.key for info in storage.list("a/e/f.txt")] == ["a/e/f.txt"]
    assert storage.list("nothing/") == []
    assert storage.list("a/x") == []
    assert [(info.key, info.size) for info in storage.list("z")] == [("z.txt", 5)]


def test_delete_and_delete_prefix(storage: ObjectStorage) -> None:
    for key in KEYS:
        storage.put_bytes(key, b"x")
    storage.delete("z.txt")
    storage.delete("z.txt")  # already gone: fine
    storage.delete("never/was")
    assert storage.delete_prefix("a/b/") == 2
    assert [info.key for info in storage.list()] == ["a/bc.txt", "a/e/f.txt"]
    assert storage.delete_prefix("a/") == 2
    assert storage.delete_prefix("a/") == 0
    assert storage.list() == []
    with pytest.raises(ObjectMissing):
        storage.get_bytes("a/bc.txt")


def test_missing_objects_raise_object_missing(storage: ObjectStorage, tmp_path: Path) -> None:
    with pytest.raises(ObjectMissing) as missing:
        storage.get_bytes("uploads/north/none.zip")
    assert missing.value.key == "uploads/north/none.zip"
    with pytest.raises(ObjectMissing):
        storage.get_range("uploads/north/none.zip", 0, 10)
    with pytest.raises(ObjectMissing):
        storage.get_range("uploads/north/none.zip", 0, 0)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with pytest.raises(KeyError):  # what a caller treating the storage as a mapping would catch
        storage.download("uploads/north/none.zip", downloads / "copy.zip")
    assert list(downloads.iterdir()) == []  # neither the copy nor a partial file of it


BAD = ["", "/abs", "a/../b", "..", "a\\b", "a\0b", "a//b", "a/", "./a"]


@pytest.mark.parametrize("key", BAD)
def test_bad_keys_are_refused_by_every_method(storage: ObjectStorage, key: str, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"x")
    calls = [
        lambda: storage.put_bytes(key, b"x"),
        lambda: storage.put_file(key, source),
        lambda: storage.get_bytes(key),
        lambda: storage.get_range(key, 0, 1),
        lambda: storage.download(key, tmp_path / "copy"),
        lambda: storage.info(key),
        lambda: storage.delete(key),
        lambda: storage.polars_source(key),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=re.escape(repr(key))):
            call()
    assert storage.list() == []


def test_puts_from_many_threads(storage: ObjectStorage) -> None:
    keys = [f"tenants/t{tenant}/upload-{n}" for tenant in range(4) for n in range(6)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(lambda key: storage.put_bytes(key, key.encode() * 100), keys))
        # and the same key from every thread at once: one of them wins whole
        list(pool.map(lambda n: storage.put_bytes("shared", bytes([n]) * 10_000), range(12)))
    assert [info.key for info in storage.list("tenants/")] == sorted(keys)
    for key in keys:
        assert storage.get_bytes(key) == key.encode() * 100
    shared = storage.get_bytes("shared")
    assert len(shared) == 10_000 and len(set(shared)) == 1


def test_polars_reads_a_parquet_object_in_place_with_a_projection(storage: ObjectStorage) -> None:
    frame = pl.DataFrame({
        "sourcedId": ["u1", "u2", "u3"],
        "givenName": ["Ada", "Grace", "Edsger"],
        "grades": ["09", "10", "11"],
    })  # fmt: skip
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    storage.put_bytes("snapshots/north/u-1/users.parquet", buffer.getvalue())

    source, options = storage.polars_source("snapshots/north/u-1/users.parquet")
    scanned = pl.scan_parquet(source, storage_options=options, glob=False)
    picked = scanned.select("givenName").filter(pl.col("givenName") != "Grace").collect()

    assert picked.columns == ["givenName"]
    assert picked["givenName"].to_list() == ["Ada", "Edsger"]
    assert pl.read_parquet(source, storage_options=options, glob=False, columns=["grades"])["grades"].to_list() == [
        "09", "10", "11",
    ]  # fmt: skip
