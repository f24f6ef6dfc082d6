"""The layout of a tenant's results/ folder: every name in it, and nothing else.

`<name>.<upload_id>.json` and `.txt` for every upload, `latest.json` for the newest one, and `cers/` for
the CERS target's dry-run files. Files are written under TMP_PREFIX and renamed; the SFTP layer never lists
names with that prefix. Given nothing; hands these names on to daemon/receipts/writer.py (which writes
them), daemon/receipts/text.py (which tells the uploader where dry-run files are) and daemon/app.py (which
tells the SFTP layer which folders of results/ a tenant may open).
"""

from __future__ import annotations

LATEST = "latest.json"
DRY_RUN_FOLDER = "cers"  # results/cers/: the files a CERS target in dry-run mode would have sent
RESULT_FOLDERS = (DRY_RUN_FOLDER,)  # the folders inside results/, read-only for the tenant
TMP_PREFIX = ".rosterd-tmp-"
MAX_NAME_BYTES_IN_RECEIPT = 200  # leaves room for ".<upload_id>.json" within a file name's 255 bytes


def receipt_stem(file: str, upload_id: str) -> str:
    """`<name>.<upload_id>`: what an upload's receipts are called, before `.json` or `.txt`."""
    return f"{_shortened(file)}.{upload_id}"


def _shortened(name: str, max_bytes: int = MAX_NAME_BYTES_IN_RECEIPT) -> str:
    """The upload's name as the start of a receipt's file name, cut so the whole stays within 255 bytes."""
    encoded = name.encode("utf-8")
    if len(encoded) <= max_bytes:
        return name
    return encoded[:max_bytes].decode("utf-8", errors="ignore") + "~"
