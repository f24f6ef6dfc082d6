"""Reading a file in many small chunks gives exactly the findings and roster of reading it whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.oneroster.findings import Mode
from daemon.oneroster.text import line_chunks
from daemon.oneroster.validate import ValidateOptions, validate_package

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
EXTERNAL = Path(__file__).resolve().parents[1] / "data" / "external"


def summary(path: Path, chunk_bytes: int, mode: Mode) -> tuple:
    result = validate_package(path, ValidateOptions(mode=mode, chunk_bytes=chunk_bytes, max_dropped_share=0.5))
    findings = sorted((f.code, f.severity, f.file or "", f.row or 0, f.column or "", f.value or "")
                      for f in result.findings.items)  # fmt: skip
    frames = {e: f.sort("_row").rows() for e, f in result.roster.frames.items()} if result.roster else None
    return result.verdict, findings, dict(result.findings.counts), result.files, frames


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.zip") if "zip-bomb" not in p.name))
@pytest.mark.parametrize("mode", list(Mode))
def test_small_chunks_change_nothing(name: str, mode: Mode) -> None:
    assert summary(SAMPLES / name, 300, mode) == summary(SAMPLES / name, 32 << 20, mode)


def test_chunks_end_at_line_breaks_and_keep_quoted_records_whole() -> None:
    text = b'h1,h2\n1,"a\nb"\n2,x\n3,"c\n\nd"\n4,y\n' * 50
    blocks = [text[i : i + 7] for i in range(0, len(text), 7)]
    chunks = [chunk.data for chunk in line_chunks(blocks, size=40)]
    assert b"".join(chunks) == text
    for chunk in chunks[:-1]:
        assert chunk.endswith(b"\n")
        assert chunk.count(b'"') % 2 == 0  # no record split over two chunks
