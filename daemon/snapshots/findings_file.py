"""Every finding of an upload that the validator kept, in one Parquet file per upload, for the admin console.

    STATE/findings/<tenant>/<upload_id>.parquet    code, severity, message, file, row, column, value, sourcedId

The store keeps at most retention.MAX_FINDINGS findings of an upload (its receipt lists those); the validator
keeps up to `keep_examples` of each code per file (1000 by default), which for a badly broken export is tens
of thousands. The worker process writes them here as it finishes the upload (`write`), whole or not at all, so
the console can filter and page them without holding them in the daemon. Given the findings as the result's
dicts; the console reads the file with polars (`scan`). The newest KEPT files of a tenant are kept.
"""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

from daemon.files import write_whole
from daemon.objects.mirror import NO_MIRROR, Mirror

KEPT = 200  # findings files per tenant: the newest uploads' (upload ids sort by arrival); older ones are removed
SCHEMA = {"code": pl.String, "severity": pl.String, "message": pl.String, "file": pl.String, "row": pl.Int64,
          "column": pl.String, "value": pl.String, "sourcedId": pl.String}  # fmt: skip


def path_of(state_dir: Path, tenant: str, upload_id: str) -> Path:
    return state_dir / "findings" / tenant / f"{upload_id}.parquet"


def write(path: Path, findings: list[dict], keep: int = KEPT) -> None:
    """The findings, in their order, as one Parquet file (replacing one a crash left); then only the tenant's
    newest `keep` files stay (a tenant's uploads are processed one at a time, so nothing else writes here
    meanwhile). Blocking."""
    frame = pl.DataFrame([{key: f.get(key) for key in SCHEMA} for f in findings], schema=SCHEMA, orient="row")
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, buffer.getvalue())
    kept = sorted(p for p in path.parent.iterdir() if p.suffix == ".parquet")
    for old in kept[: max(0, len(kept) - keep)]:
        old.unlink(missing_ok=True)


def scan(path: Path, mirror: Mirror = NO_MIRROR) -> pl.LazyFrame | None:
    """The upload's findings with their position (`n`, from 0), here or in place in the shared storage (another
    replica processed the upload); None when no file was written for it (an upload processed before this file
    existed: the console falls back to the stored result)."""
    scanned = mirror.scan_file(path)
    return scanned.with_row_index("n") if scanned is not None else None
