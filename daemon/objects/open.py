"""The one place that turns [storage] settings into an ObjectStorage.

It takes the settings' fields one by one, not daemon.config's StorageConfig: config sits above this layer,
and the caller (the app's wiring) already holds the secret read from where the settings said to find it.
"""

from __future__ import annotations

from pathlib import Path

from daemon.objects.interface import ObjectStorage
from daemon.objects.local import LocalStorage

LOCAL_FOLDER = "objects"  # below the state directory


def open_storage(
    kind: str, state_dir: Path, *, bucket: str | None = None, prefix: str = "", region: str = "us-east-1",
    endpoint: str | None = None, access_key_id: str | None = None, secret: str | None = None,
) -> ObjectStorage:
    """`local`: STATE/objects. `s3`: the bucket, which needs a bucket name, an access key id and its secret."""
    if kind == "local":
        return LocalStorage(Path(state_dir) / LOCAL_FOLDER)
    if kind == "s3":
        if not bucket or not access_key_id or not secret:
            raise ValueError("an s3 storage needs a bucket, an access key id and a secret access key")
        from daemon.objects.s3 import S3Storage  # boto3 takes a while to import: only where it is used

        return S3Storage(bucket, prefix, region, endpoint, access_key_id, secret)
    raise ValueError(f"a storage kind is 'local' or 's3' (got {kind!r})")
