"""Reading a file in many small chunks gives exactly the findings and roster of reading it whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.oneroster.findings import Mode
from daemon.oneroster.text import LineTooLong, line_chunks
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


@pytest.mark.parametrize(("lines", "row"), [
    ([b"h" * 8, b"a" * 20, b"b" * 8], 2),  # across several blocks
    ([b"h" * 8, b"a" * 5, b"b" * 11], 3),  # one byte over, starting mid-block
    ([b"h" * 30], 1),  # the header, with no line break at all
])  # fmt: skip
def test_a_line_over_the_limit_is_reported_with_its_row_before_it_is_held_whole(lines, row) -> None:
    text = b"\n".join(lines)
    blocks = [text[i : i + 4] for i in range(0, len(text), 4)]
    with pytest.raises(LineTooLong) as raised:
        list(line_chunks(blocks, size=16, max_line=10))
    assert raised.value.row == row and raised.value.length > 10


def test_lines_up_to_the_limit_pass_whole() -> None:
    text = b"\n".join([b"h" * 10, b"a" * 10, b"", b"b" * 3, b"c" * 10]) + b"\n"
    blocks = [text[i : i + 4] for i in range(0, len(text), 4)]
    assert b"".join(chunk.data for chunk in line_chunks(blocks, size=16, max_line=10)) == text
