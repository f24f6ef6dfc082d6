"""Object storage (issue 17): where uploads, snapshots and change sets are kept, as keyed objects, in the
state directory (one replica) or an S3-compatible bucket (several replicas sharing it).

This is the bottom of that work: the interface (interface.py), its two implementations (local.py, s3.py) and
`open_storage`, which picks one from the settings. S3Storage is imported when first named (boto3 takes a
third of a second to import, which a deployment without S3 need not pay).
"""

from typing import Any

from daemon.objects.interface import ObjectInfo, ObjectMissing, ObjectStorage, StorageError, check_key
from daemon.objects.local import LocalStorage
from daemon.objects.open import open_storage

__all__ = [
    "LocalStorage",
    "S3Storage",
    "ObjectInfo",
    "ObjectMissing",
    "ObjectStorage",
    "StorageError",
    "check_key",
    "open_storage",
]


def __getattr__(name: str) -> Any:
    if name == "S3Storage":
        from daemon.objects.s3 import S3Storage

        return S3Storage
    raise AttributeError(f"module 'daemon.objects' has no attribute {name!r}")
