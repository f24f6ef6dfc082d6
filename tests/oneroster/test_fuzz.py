"""Damaged text never crashes the validator: random byte edits to a real package give findings, not errors."""

from __future__ import annotations

import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.oneroster.codes import CODES
from daemon.oneroster.findings import Mode
from daemon.oneroster.validate import ValidateOptions, validate_package

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "valid-1.1-bulk.zip"
with zipfile.ZipFile(SAMPLE) as _zf:
    ORIGINAL = {name: _zf.read(name) for name in _zf.namelist()}

# Bytes that matter to a CSV reader, plus invalid UTF-8, a BOM and a NUL.
NASTY = [b'"', b",", b"\n", b"\r", b"\r\n", b'""', b"\xff", b"\xc3", b"\xef\xbb\xbf", b"\x00", b" ", b"{", b"}"]
edit = st.tuples(
    st.sampled_from(sorted(n for n in ORIGINAL if n != "manifest.csv")),
    st.floats(min_value=0, max_value=1),
    st.sampled_from(["insert", "delete", "replace"]),
    st.sampled_from(NASTY),
)


def apply(files: dict[str, bytes], change: tuple) -> None:
    name, where, how, piece = change
    data = files[name]
    at = int(where * len(data))
    if how == "insert":
        files[name] = data[:at] + piece + data[at:]
    elif how == "delete":
        files[name] = data[:at] + data[at + len(piece) :]
    else:
        files[name] = data[:at] + piece + data[at + len(piece) :]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(edit, min_size=1, max_size=6), strict=st.booleans())
def test_random_damage_yields_findings_not_crashes(tmp_path: Path, changes: list, strict: bool) -> None:
    files = dict(ORIGINAL)
    for change in changes:
        apply(files, change)
    path = tmp_path / "damaged.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    options = ValidateOptions(mode=Mode.STRICT if strict else Mode.LENIENT, chunk_bytes=512)
    result = validate_package(path, options)
    assert result.verdict in ("accepted", "rejected")
    assert set(result.findings.counts) <= set(CODES)
    if result.accepted:
        for entity, frame in result.roster.frames.items():
            assert frame["_row"].is_unique().all(), entity
