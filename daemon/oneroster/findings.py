"""Findings: what rosterd says about a roster, as data with stable codes (the catalogue: codes.py).

Every finding, the validator's, the snapshot merge's and a target's (CERS), is a `Finding`: a code, a
severity, a message and a place: the file, the row as a person sees it in the upload (the header on row 1),
the column and the value. A finding about a row of a stored snapshot rather than of the upload (a CERS
target's findings, made from the tenant's snapshot) has no row number: its row is None and `sourced_id`
names the row instead, and its dict form has the key `sourcedId` too. Where sourced_id is None (every
finding about the upload's own rows) the dict leaves the key out, so those keep the keys receipts always had.
Text is rendered from findings at the edge (see report.py), never stored in them.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum

import polars as pl

MAX_VALUE_CHARS = 80
REDACTED = "[redacted]"


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


class Mode(StrEnum):
    """Validation mode: lenient accepts documented real-world deviations with a warning, strict does not."""

    LENIENT = "lenient"
    STRICT = "strict"

    def deviation(self) -> Severity:
        """The severity of a deviation that lenient mode tolerates."""
        return Severity.ERROR if self is Mode.STRICT else Severity.WARNING

    def tolerated(self, effect: str) -> str:
        """The end of a deviation's message: what lenient mode did about it (" (ignored)"), and nothing in
        strict mode, where the deviation is an error and the upload is not used."""
        return f" ({effect})" if self is Mode.LENIENT else ""


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    severity: Severity
    message: str
    file: str | None = None
    row: int | None = None
    column: str | None = None
    value: str | None = None
    sourced_id: str | None = None  # the row, where it is a stored snapshot's row and `row` is None

    def to_dict(self) -> dict:
        """As kept in results and receipts: the fields by name, `sourcedId` only where it names the row."""
        data = asdict(self)
        data["severity"] = str(self.severity)
        sourced_id = data.pop("sourced_id")
        if sourced_id is not None:
            data["sourcedId"] = sourced_id
        return data


def clip(value: object) -> str | None:
    """Shorten a value for a finding: reports show what was there, not whole payloads."""
    if value is None:
        return None
    text = str(value)
    if len(text) > MAX_VALUE_CHARS:
        return text[: MAX_VALUE_CHARS - 1] + "…"
    return text


class Findings:
    """Collects findings. Counts every occurrence; keeps the first `keep` examples per (code, file)."""

    def __init__(self, keep: int = 1000) -> None:
        self.keep = keep
        self.items: list[Finding] = []
        self.counts: Counter[str] = Counter()
        self.counts_by_severity: Counter[tuple[str, Severity]] = Counter()  # complete, like counts
        self._kept: Counter[tuple[str, str | None]] = Counter()
        self.errors = 0
        self.warnings = 0
        self.rejecting = 0  # errors that reject the upload by themselves (package, file or header level)
        self._lock = threading.Lock()  # files are checked in parallel threads

    def add(
        self,
        code: str,
        severity: Severity,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
        value: object = None,
        sourced_id: str | None = None,
        scope: str | None = None,
    ) -> None:
        """Record one finding. An error of scope "file" (the default when there is no row) rejects the upload;
        an error of scope "row" drops that row only."""
        with self._lock:
            self._count(code, severity, 1)
            if severity is Severity.ERROR and (scope or ("row" if row is not None else "file")) == "file":
                self.rejecting += 1
            if self._kept[(code, file)] < self.keep:
                self._kept[(code, file)] += 1
                self.items.append(Finding(code, severity, message, file, row, column, clip(value), sourced_id))

    def add_rows(
        self,
        code: str,
        severity: Severity,
        rows: pl.DataFrame,
        message: str | Callable[[dict], str],
        *,
        file: str,
        column: str | None = None,
        secret: bool = False,
        scope: str = "row",
    ) -> None:
        """Record one finding per row of `rows` (columns `_row` and optionally `value`), vectorised upstream."""
        total = rows.height
        if total == 0:
            return
        with self._lock:
            self._count(code, severity, total)
            if severity is Severity.ERROR and scope == "file":
                self.rejecting += total
            room = self.keep - self._kept[(code, file)]
            if room <= 0:
                return
            examples = rows.head(room)
            self._kept[(code, file)] += examples.height
        has_value = "value" in examples.columns
        for rec in examples.iter_rows(named=True):
            value = REDACTED if secret and has_value and rec.get("value") else rec.get("value")
            text = message(rec) if callable(message) else message
            self.items.append(Finding(code, severity, text, file, rec["_row"], column, clip(value)))

    def extend(self, findings: Iterable[Finding]) -> None:
        for f in findings:
            self.add(f.code, f.severity, f.message, file=f.file, row=f.row, column=f.column, value=f.value,
                     sourced_id=f.sourced_id)

    def _count(self, code: str, severity: Severity, n: int) -> None:
        self.counts[code] += n
        self.counts_by_severity[(code, severity)] += n
        if severity is Severity.ERROR:
            self.errors += n
        else:
            self.warnings += n

    def sorted(self) -> list[Finding]:
        """Findings in reading order: package level first, then by file, row and code."""
        return sorted(self.items, key=lambda f: (f.file is not None, f.file or "", f.row or 0, f.code))
