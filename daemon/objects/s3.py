"""Objects in an S3-compatible bucket (AWS S3, MinIO, SeaweedFS, Ceph): the storage several replicas share.

Every key is stored under the configured prefix (one bucket may serve several deployments) and listed without
it. A PUT, and a multipart upload once it completes, is atomic on every S3 server, so a reader never sees half
an object; a download is written whole to the local disk through partials.py.

One boto3 client serves every thread: clients are thread-safe. Sessions are not, but making a client from a
fresh session reads botocore's service models again (a sixth of a second), so one session per process makes
every client, under a lock; each client gets its own credentials, so nothing else is shared.

Errors come out as the interface's ObjectMissing or StorageError, saying which request failed and why, in
words that name the bucket and the key but never the secret access key.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from daemon.objects.interface import (
    ObjectInfo, ObjectMissing, StorageError, check_key, check_prefix, check_range, utc_text,
)
from daemon.objects.partials import write_streamed

# What servers answer for a missing object: GET says NoSuchKey, HEAD (no body to say it in) a bare 404.
_MISSING = {"404", "NoSuchKey", "NotFound"}
# Answers that mean the credentials are wrong, or lack a permission: the message says where to look.
_REFUSED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}
_DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys at once
# Connections kept per client: threads beyond this wait for one. Uploads and downloads of large files each
# use up to _TRANSFER_THREADS of them.
_POOL_CONNECTIONS = 32
_TRANSFER_THREADS = 8

_session_lock = threading.Lock()
_session: boto3.session.Session | None = None


class S3Storage:
    def __init__(
        self, bucket: str, prefix: str = "", region: str = "us-east-1", endpoint: str | None = None,
        access_key_id: str = "", secret_access_key: str = "", attempts: int = 5,
    ) -> None:
        self.bucket = bucket
        self.prefix = _normal_prefix(prefix)
        self.region = region
        self.endpoint = endpoint
        self.access_key_id = access_key_id
        self._secret = secret_access_key
        self._client = _new_client(
            "s3", region_name=region, endpoint_url=endpoint, aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key, config=_client_config(endpoint, attempts),
        )
        self._transfer = TransferConfig(max_concurrency=_TRANSFER_THREADS)

    def __repr__(self) -> str:
        return (f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r}, region={self.region!r}, "
                f"endpoint={self.endpoint!r}, access_key_id={self.access_key_id!r})")  # fmt: skip

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    @contextmanager
    def _request(self, operation: str, key: str) -> Iterator[None]:
        """Turn what boto3 raises into the interface's exceptions."""
        try:
            yield
        except ClientError as error:
            code = _code(error)
            if code in _MISSING:
                raise ObjectMissing(key) from None
            message = error.response.get("Error", {}).get("Message") or "no message"
            raise StorageError(self._explain(operation, key, f"{code}: {message}", code in _REFUSED)) from error
        except (BotoCoreError, Boto3Error) as error:  # no answer at all (network, timeouts), or a failed transfer
            # a failed transfer names the server's code in its text, as "An error occurred (AccessDenied) ..."
            refused = any(f"({code})" in str(error) for code in _REFUSED)
            raise StorageError(self._explain(operation, key, str(error), refused)) from error

    def _explain(self, operation: str, key: str, reason: str, refused: bool) -> str:
        text = f"s3 {operation} of {key!r} in bucket {self.bucket!r} at {self.endpoint or 'AWS'} failed: {reason}"
        if refused:
            text += " (check the access key id, the secret access key and the bucket's permissions)"
        # boto3 never puts the secret in its messages; this makes sure a future version does not either
        return text.replace(self._secret, "[redacted]") if self._secret else text

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._request("PutObject", key):
            self._client.put_object(Bucket=self.bucket, Key=self._name(key), Body=data)

    def put_file(self, key: str, local_path: Path) -> None:
        """Large files go up in parts, several at once; the object appears only when the last part is in."""
        name = self._name(key)
        with self._request("upload", key):
            self._client.upload_file(str(local_path), self.bucket, name, Config=self._transfer)

    def get_bytes(self, key: str) -> bytes:
        with self._request("GetObject", key):
            response = self._client.get_object(Bucket=self.bucket, Key=self._name(key))
            return response["Body"].read()

    def get_range(self, key: str, start: int, length: int) -> bytes:
        check_range(start, length)
        if length == 0:  # no Range header says "nothing": still, a missing object is missing
            if self.info(key) is None:
                raise ObjectMissing(key)
            return b""
        with self._request("GetObject", key):
            try:
                response = self._client.get_object(
                    Bucket=self.bucket, Key=self._name(key), Range=f"bytes={start}-{start + length - 1}"
                )
            except ClientError as error:
                if _code(error) == "InvalidRange":  # the range starts at or after the end: nothing there
                    return b""
                raise
            data = response["Body"].read()
        # a server that ignores Range answers with the whole object
        return data if "ContentRange" in response else data[start : start + length]

    def download(self, key: str, local_path: Path) -> None:
        name = self._name(key)
        with self._request("download", key):
            write_streamed(
                Path(local_path),
                lambda out: self._client.download_fileobj(self.bucket, name, out, Config=self._transfer),
            )

    def info(self, key: str) -> ObjectInfo | None:
        try:
            with self._request("HeadObject", key):
                head = self._client.head_object(Bucket=self.bucket, Key=self._name(key))
        except ObjectMissing:
            return None
        return ObjectInfo(key, head["ContentLength"], utc_text(head["LastModified"]))

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Every page of the listing (S3 answers 1000 keys at a time), in key order."""
        full = self.prefix + check_prefix(prefix)
        found = []
        with self._request("ListObjectsV2", prefix):
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) :]
                    found.append(ObjectInfo(key, item["Size"], utc_text(item["LastModified"])))
        return sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        with self._request("DeleteObject", key):
            self._client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def delete_prefix(self, prefix: str) -> int:
        names = [self.prefix + info.key for info in self.list(prefix)]
        for first in range(0, len(names), _DELETE_BATCH):
            batch = [{"Key": name} for name in names[first : first + _DELETE_BATCH]]
            with self._request("DeleteObjects", prefix):
                answer = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            failed = [item for item in answer.get("Errors", []) if item.get("Code") not in _MISSING]
            if failed:
                reason = f"{len(failed)} keys not deleted, the first {failed[0].get('Key')!r}: {failed[0].get('Code')}"
                raise StorageError(self._explain("DeleteObjects", prefix, reason, failed[0].get("Code") in _REFUSED))
        return len(names)

    def polars_source(self, key: str) -> tuple[str, dict[str, str] | None]:
        """polars reads through its own S3 client (object_store, in Rust), configured here to match boto3's.
        The options hold the secret access key: hand them to polars, never to a log."""
        options = {
            "aws_region": self.region,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self._secret,
            # path-style (https://host/bucket/key) wherever an endpoint is given: SeaweedFS, MinIO and Ceph
            # rarely have a DNS name per bucket; AWS itself wants virtual-hosted names
            "aws_virtual_hosted_style_request": "false" if self.endpoint else "true",
        }
        if self.endpoint:
            options["aws_endpoint_url"] = self.endpoint
            if self.endpoint.startswith("http://"):
                options["aws_allow_http"] = "true"
        return f"s3://{self.bucket}/{self._name(key)}", options

    def close(self) -> None:
        self._client.close()


def _new_client(service: str, **options: object):  # -> a botocore client (its class is made at run time)
    global _session
    with _session_lock:
        if _session is None:
            _session = boto3.session.Session()
        return _session.client(service, **options)


def _client_config(endpoint: str | None, attempts: int = 5) -> Config:
    options: dict = {
        "signature_version": "s3v4",
        "retries": {"mode": "standard", "max_attempts": attempts},  # backs off on throttling and 5xx answers
        "connect_timeout": 5,
        "read_timeout": 60,
        "max_pool_connections": _POOL_CONNECTIONS,
    }
    if endpoint:
        options["s3"] = {"addressing_style": "path"}
        # botocore adds CRC checksums to every request by default since 1.36; not every S3-compatible server
        # takes them, so outside AWS they are sent only where the API requires one
        options["request_checksum_calculation"] = "when_required"
        options["response_checksum_validation"] = "when_required"
    return Config(**options)


def _normal_prefix(prefix: str) -> str:
    """'' or a valid key with one '/' after it: "rosterd", "/rosterd/" and "rosterd/" are the same prefix."""
    stripped = prefix.strip("/")
    return f"{check_key(stripped)}/" if stripped else ""


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
