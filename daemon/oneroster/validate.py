"""Validate one OneRoster zip: the gate in front of every snapshot.

validate_package(path, options) -> ValidationResult runs every stage and reports everything in one pass:
zip container, manifest, each file's text, header and rows, then references across files. A package-,
file- or header-level error rejects the upload; a row-level error drops that row and what depends on it,
and too many dropped rows in a file reject the upload too. An accepted upload yields a typed Roster.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from daemon.oneroster.findings import Findings, Mode, Severity
from daemon.oneroster.header import map_header
from daemon.oneroster.manifest import Manifest, guess_version, read_manifest
from daemon.oneroster.references import FileState, check_references
from daemon.oneroster.prefetch import prefetch
from daemon.oneroster.rows import Context, check_file_rules, check_rows
from daemon.oneroster.schema import MANIFEST_FILE, V10_HEADERS, V11, V12, Kind, Version
from daemon.oneroster.text import CsvReader, LineTooLong, line_chunks, split_cells
from daemon.oneroster.zipread import CHUNK, EntryError, Package, ZipLimits, open_package

KNOWN_FILES = frozenset({*V11.files, *V12.files, MANIFEST_FILE})
MAX_MANIFEST_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ValidateOptions:
    mode: Mode = Mode.LENIENT
    limits: ZipLimits = ZipLimits()
    max_dropped_share: float = 0.01  # a file losing more than this share of its rows rejects the upload
    keep_examples: int = 1000  # findings kept per (code, file); counts are always complete
    chunk_bytes: int = 8 << 20  # text checked at a time; bounds the memory a large file needs
    max_line_bytes: int = 1 << 20  # a longer line rejects its file (at least zipread.CHUNK, see line_chunks)
    files_at_once: int = 2  # files checked in parallel threads
    progress: Callable[[str], None] | None = None


@dataclass(frozen=True, slots=True)
class FileSummary:
    mode: str  # bulk | delta
    rows: int  # data rows in the file
    dropped: int  # rows dropped for errors (their own or a dropped row they depend on)


@dataclass(slots=True)
class Roster:
    """The typed result of an accepted upload: one frame per entity, normalised, without dropped rows.

    Each frame keeps `_row`, the row number in the uploaded file, so later stages can point back at it.
    """

    version: str
    modes: dict[str, str]  # entity -> bulk | delta, for the files the package holds
    frames: dict[str, pl.DataFrame]


@dataclass(slots=True)
class ValidationResult:
    verdict: str  # accepted | rejected
    version: str | None
    mode: Mode
    findings: Findings
    files: dict[str, FileSummary] = field(default_factory=dict)
    roster: Roster | None = None

    @property
    def accepted(self) -> bool:
        return self.verdict == "accepted"

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "version": self.version,
            "mode": str(self.mode),
            "files": {name: {"mode": s.mode, "rows": s.rows, "dropped": s.dropped} for name, s in self.files.items()},
            "findings": [f.to_dict() for f in self.findings.sorted()],
            "counts_by_code": dict(sorted(self.findings.counts.items())),
            "findings_truncated": len(self.findings.items) < sum(self.findings.counts.values()),
        }


def validate_package(path: Path, options: ValidateOptions = ValidateOptions()) -> ValidationResult:
    findings = Findings(options.keep_examples)
    mode = options.mode
    with open_package(Path(path), findings, mode, KNOWN_FILES, options.limits) as pkg:
        if pkg.fatal:
            return ValidationResult("rejected", None, mode, findings)
        return _Run(pkg, findings, options).run()


class _Run:
    """One validation of an opened package; holds what the stages share."""

    def __init__(self, pkg: Package, findings: Findings, options: ValidateOptions) -> None:
        self.pkg = pkg
        self.findings = findings
        self.options = options
        self.mode = options.mode

    def run(self) -> ValidationResult:
        data_files = {name[:-4]: entry for name, entry in self.pkg.entries.items() if name != MANIFEST_FILE}
        manifest = self._manifest()
        if manifest is None:
            headers = self._headers(data_files)
            if self._is_oneroster_10(headers):
                return ValidationResult("rejected", "1.0", self.mode, self.findings)
            self.findings.add("package.missing_manifest", Severity.ERROR,
                              "manifest.csv is missing; every OneRoster 1.1 and 1.2 package needs one")  # fmt: skip
            version, label = guess_version(headers), None
            modes = {entity: "bulk" for entity in data_files}
        else:
            version = manifest.version or guess_version({e: [] for e in data_files})
            label = manifest.version_label if manifest.version else None
            modes = self._modes(manifest, version, data_files)
        label = label or version.name
        label = "1.2" if label.startswith("1.2") else label

        present = {e: modes[e] for e in data_files if e in version.tables and modes.get(e) in ("bulk", "delta")}
        all_bulk = "delta" not in present.values()
        if present:
            self._required_files(version, present, all_bulk)
        elif manifest is not None and not self.findings.errors:
            self.findings.add("package.no_changes", Severity.WARNING,
                              "the package holds only manifest.csv: nothing changed")  # fmt: skip
        states = self._check_files(version, present, data_files)
        check_references(states, version, all_bulk, self.findings, self.mode)
        files = self._summaries(states)
        if self.findings.rejecting:
            return ValidationResult("rejected", label, self.mode, self.findings, files)
        frames = {e: (s.frame if s.frame["_ok"].all() else s.frame.filter(pl.col("_ok"))).drop("_ok")
                  for e, s in states.items()}  # fmt: skip
        roster = Roster(label, {e: s.mode for e, s in states.items()}, frames)
        return ValidationResult("accepted", label, self.mode, self.findings, files, roster)

    # manifest and package shape

    def _manifest(self) -> Manifest | None:
        if MANIFEST_FILE not in self.pkg.entries:
            return None
        if self.pkg.entries[MANIFEST_FILE].size > MAX_MANIFEST_BYTES:
            self.findings.add("manifest.too_large", Severity.ERROR,
                              f"manifest.csv is over {MAX_MANIFEST_BYTES // 1024} KiB; a manifest has a few dozen "
                              "short rows", file=MANIFEST_FILE)  # fmt: skip
            return Manifest(None, None)
        data = self._read(MANIFEST_FILE)
        if data is None:
            return Manifest(None, None)
        return read_manifest(data, self.findings, self.mode)

    def _headers(self, data_files: dict) -> dict[str, list[str]]:
        """Each file's header cells, read from the first blocks of its stream (not the whole file)."""
        headers = {}
        for entity in data_files:
            head = bytearray()
            stream = self.pkg.stream(f"{entity}.csv")
            try:
                for block in stream:
                    head += block
                    if b"\n" in block or len(head) > MAX_MANIFEST_BYTES:
                        break
            except EntryError:
                continue  # reported when the file itself is read
            finally:
                stream.close()
            line = bytes(head).removeprefix(b"\xef\xbb\xbf").split(b"\n", 1)[0].rstrip(b"\r")
            headers[entity] = split_cells(line.decode("utf-8", errors="replace"))
        return headers

    def _is_oneroster_10(self, headers: dict[str, list[str]]) -> bool:
        legacy = {e: [h for h in cols if h in V10_HEADERS.get(e, ())] for e, cols in headers.items()}
        legacy = {e: found for e, found in legacy.items() if found}
        if not legacy:
            return False
        for entity, found in legacy.items():
            expected = ",".join(V11.tables[entity].names)
            self.findings.add(
                "package.oneroster_1_0",
                Severity.ERROR,
                f"this is a OneRoster 1.0 package (no manifest.csv; {entity}.csv has the 1.0 headers "
                f"{', '.join(found)}). Export OneRoster 1.1 or 1.2; 1.1 expects {entity}.csv headers: {expected}",
                file=f"{entity}.csv",
                row=1,
                value=",".join(found),
                scope="file",
            )
        return True

    def _modes(self, manifest: Manifest, version: Version, data_files: dict) -> dict[str, str]:
        modes: dict[str, str] = {}
        for entity in version.tables:
            declared, held = manifest.modes.get(entity), entity in data_files
            file = f"{entity}.csv"
            if declared in ("bulk", "delta") and not held:
                self.findings.add("manifest.file_missing", Severity.ERROR,
                                  f"manifest.csv declares {file} {declared}, but the zip does not hold it", file=file)  # fmt: skip
            elif declared == "absent" and held:
                self.findings.add("manifest.file_unexpected", Severity.ERROR,
                                  f"manifest.csv declares {file} absent, but the zip holds it", file=file)  # fmt: skip
                modes[entity] = "bulk"
            elif declared is None and held:
                self.findings.add("manifest.file_not_declared", self.mode.deviation(),
                                  f"manifest.csv does not mention {file}{self.mode.tolerated('read as bulk')}",
                                  file=file)  # fmt: skip
                modes[entity] = "bulk"
            elif declared == "invalid" and held:
                modes[entity] = "bulk"
            elif declared in ("bulk", "delta"):
                modes[entity] = declared
        for entity in data_files:
            if entity not in version.tables:
                other = next(v.name for v in (V11, V12) if entity in v.tables)
                self.findings.add("zip.unknown_file", Severity.ERROR,
                                  f"{entity}.csv is a OneRoster {other} file, not a {version.name} one: is "
                                  "oneroster.version in manifest.csv right?", file=f"{entity}.csv")  # fmt: skip
        return modes

    def _required_files(self, version: Version, present: dict[str, str], all_bulk: bool) -> None:
        if not all_bulk:
            return  # a delta package names only what changed
        for entity in version.ingestion:
            if entity not in present:
                self.findings.add("package.required_file_missing", Severity.ERROR,
                                  f"{entity}.csv is needed in a bulk package", file=f"{entity}.csv")  # fmt: skip

    # files

    def _check_files(self, version: Version, present: dict[str, str], data_files: dict) -> dict[str, FileState]:
        # Largest first, two at a time from the start: polars releases the GIL, so one file's single-threaded
        # steps (decompression, byte counts) overlap the other's parallel ones; the largest file alone keeps
        # only about 1.5 of 2 cores busy. Each file is read and checked in its own thread, start to end, so
        # the findings of a file come in the same order whatever runs beside it.
        order = sorted(present, key=lambda e: -data_files[e].size)

        def check(entity: str) -> FileState | None:
            table = version.tables[entity]
            self._progress(f"checking {table.file} ({data_files[entity].size / 1e6:.1f} MB)")
            return self._check_file(Context(table, version, present[entity], self.mode))

        with ThreadPoolExecutor(max_workers=self.options.files_at_once, thread_name_prefix="rosterd-file") as pool:
            results = dict(zip(order, pool.map(check, order), strict=True))
        return {entity: state for entity, state in results.items() if state is not None}

    def _check_file(self, ctx: Context) -> FileState | None:
        """Stream one file through the text, header and row checks, a chunk of lines at a time.

        Only one chunk's strings exist at once; what stays is the typed frame, so a file's size in memory
        is about that of its typed values, not of its text.
        """
        file = ctx.table.file
        secret = any(c.kind is Kind.SECRET for c in ctx.table.columns)
        reader = CsvReader(file, self.findings, self.mode, redact=secret)
        hmap = None
        pieces: list[pl.DataFrame] = []
        data_rows = dropped = 0
        dropped_ids: list[pl.Series] = []
        max_line = max(self.options.max_line_bytes, CHUNK)
        chunks = prefetch(line_chunks(self.pkg.stream(file), self.options.chunk_bytes, max_line))
        try:
            for number, (data, last) in enumerate(_last_flagged(chunks)):
                if number == 0:
                    data = reader.start(data)
                    if data is None:
                        return None
                    hmap = map_header(reader.header, ctx.table, self.findings, self.mode)
                    if not hmap.usable:
                        return None
                raw = reader.rows(data, last)
                del data
                if raw is None:
                    return None
                data_rows += raw.data_rows
                dropped += raw.dropped
                dropped_ids.append(raw.dropped_ids)
                pieces.append(check_rows(raw, hmap, ctx, self.findings))
                del raw
        except EntryError as err:
            self.findings.extend([err.finding])
            return None
        except LineTooLong as err:
            self.findings.add("csv.line_too_long", Severity.ERROR,
                              f"{file}: row {err.row} is longer than {max_line // 1024} KiB (at least {err.length} "
                              "bytes); one row is one record, and the file was not read further", file=file,
                              row=err.row, scope="file")  # fmt: skip
            return None
        finally:
            chunks.close()
        if data_rows == 0:
            self.findings.add("csv.no_data_rows", self.mode.deviation(), f"{file} has a header but no data rows",
                              file=file, scope="file")  # fmt: skip
        frame = check_file_rules(pl.concat(pieces, rechunk=False), ctx, self.findings)
        return FileState(ctx.table, ctx.file_mode, frame, data_rows, dropped, pl.concat(dropped_ids))

    def _summaries(self, states: dict[str, FileState]) -> dict[str, FileSummary]:
        files = {}
        for entity, state in sorted(states.items()):
            file = state.table.file
            files[file] = FileSummary(state.mode, state.data_rows, state.dropped)
            share = state.dropped / state.data_rows if state.data_rows else 0.0
            if share > self.options.max_dropped_share:
                self.findings.add(
                    "file.too_many_dropped_rows",
                    Severity.ERROR,
                    f"{state.dropped} of {state.data_rows} {entity} rows ({share:.1%}) were dropped; at most "
                    f"{self.options.max_dropped_share:.1%} may be dropped",
                    file=file,
                    value=f"{state.dropped}/{state.data_rows}",
                )
        return files

    def _read(self, name: str) -> bytes | None:
        try:
            return self.pkg.read(name)
        except EntryError as err:
            f = err.finding
            self.findings.add(f.code, f.severity, f.message, file=f.file, row=f.row, column=f.column, value=f.value)
            return None

    def _progress(self, message: str) -> None:
        if self.options.progress is not None:
            self.options.progress(message)


def _last_flagged(items):
    """Pair each item with whether it is the last one."""
    it = iter(items)
    try:
        current = next(it)
    except StopIteration:
        return
    for following in it:
        yield current, False
        current = following
    yield current, True
