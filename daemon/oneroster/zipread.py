"""Open an uploaded OneRoster zip without trusting it.

The zip is the part of an upload its sender controls completely, so nothing here extracts to disk or
treats an entry name as a path: entries are chosen by rule, decompressed into memory in bounded chunks,
and every entry left out becomes a finding that names it, so the uploader can see why.
"""

from __future__ import annotations

import lzma
import re
import stat
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from daemon.oneroster.findings import Finding, Findings, Mode, Severity, clip

MIB = 1024 * 1024
CHUNK = MIB
# Below this size a high ratio is harmless (a CSV of mostly blank cells compresses enormously).
RATIO_FLOOR = MIB

# A zip starts with a local file header, or with the end record when it is empty, or with the marker
# some tools put before a single-part "spanned" archive.
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
LOCAL_HEADER = ZIP_SIGNATURES[0]
END_RECORD = ZIP_SIGNATURES[1]
END_RECORD_SIZE = 22
ZIP64_LOCATOR = b"PK\x06\x07"
ZIP64_END_RECORD = b"PK\x06\x06"
ZIP64_RECORD_SIZE = 56
MAX_COMMENT = 0xFFFF

ENCRYPTED = 0x1
PATCHED_DATA = 0x20  # a delta against another file, which zipfile cannot apply
METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
ARTEFACT_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
DRIVE = re.compile(r"[A-Za-z]:")

# What zipfile raises on a damaged directory: its own error, short reads, undecodable names, newer formats.
BROKEN_DIRECTORY = (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError)
# What decompression raises on damaged data (bz2 reports bad streams as OSError).
BROKEN_DATA = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, UnicodeDecodeError)


@dataclass(frozen=True, slots=True)
class ZipLimits:
    max_entries: int = 200
    max_total_bytes: int = 4 * 1024**3  # sum of declared uncompressed sizes of the entries we would read
    max_ratio: float = 200.0  # per entry, uncompressed / compressed (only checked above RATIO_FLOOR)


@dataclass(frozen=True, slots=True)
class Entry:
    name: str  # canonical file name, e.g. "users.csv"
    zip_name: str  # the name as stored in the zip, e.g. "Export/Users.csv"
    size: int  # declared uncompressed size
    compressed: int


class EntryError(Exception):
    """An entry could not be read; `finding` says why. The caller decides where the finding goes."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message)
        self.finding = finding


class Package:
    """An opened zip and the OneRoster files chosen from it. Use as a context manager."""

    def __init__(self, archive: zipfile.ZipFile | None, infos: dict[str, zipfile.ZipInfo]) -> None:
        self._archive = archive
        self._infos = infos
        self.entries = {
            name: Entry(name, info.filename, info.file_size, info.compress_size) for name, info in infos.items()
        }
        # Without an archive nothing can be read: the upload is rejected as a whole.
        self.fatal = archive is None

    def read(self, name: str) -> bytes:
        """The whole decompressed content of `name`, a key of `entries` (any other name is a KeyError).

        Raises EntryError when the data is damaged; its finding is not added anywhere, the caller adds it.
        """
        return b"".join(self.stream(name))

    def stream(self, name: str) -> Iterator[bytes]:
        """The decompressed content of `name` in blocks of about 1 MiB, checked as `read` checks it.

        A damaged entry raises EntryError part-way through, after the blocks before the damage.
        """
        info = self._infos[name]
        assert self._archive is not None  # entries is empty when there is no archive
        try:
            yield from _inflate(self._archive, info)
        except BROKEN_DATA as exc:
            message = (
                f"The entry {_quote(info.filename)} could not be decompressed because its data is damaged "
                f"({str(exc) or type(exc).__name__}). Create the zip again and upload it."
            )
            finding = Finding("zip.corrupt_entry", Severity.ERROR, message, name, value=clip(info.filename))
            raise EntryError(finding) from exc

    def close(self) -> None:
        if self._archive is not None:
            self._archive.close()

    def __enter__(self) -> Package:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_package(
    path: Path,
    findings: Findings,
    mode: Mode,
    known_files: Collection[str],
    limits: ZipLimits = ZipLimits(),
) -> Package:
    """Open the zip at `path` and choose its OneRoster files, reporting every problem to `findings`."""
    try:
        archive = _open_zip(path, limits)
    except _Unreadable as why:
        findings.add(why.code, Severity.ERROR, why.message)
        return Package(None, {})
    context = _Context(findings, mode, limits, frozenset(known_files), {n.lower(): n for n in known_files})
    candidates = _screen(archive.infolist(), context)
    infos = _within_ratio(_name(_place(candidates, context), context), context)
    if _too_large(infos, context):
        archive.close()
        return Package(None, {})
    return Package(archive, infos)


# --- the container ---------------------------------------------------------------------------------------


class _Unreadable(Exception):
    """The upload cannot be read at all."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _open_zip(path: Path, limits: ZipLimits) -> zipfile.ZipFile:
    with path.open("rb") as fp:
        head = fp.read(len(LOCAL_HEADER))
        _check_head(head)
        # Counted before zipfile parses the directory, so a zip of a million entries costs nothing.
        _check_count(_declared_count(fp), limits)
    try:
        archive = zipfile.ZipFile(path)
    except BROKEN_DIRECTORY as exc:
        raise _Unreadable(
            "zip.truncated",
            "The zip archive is cut short or damaged, so its list of files cannot be read. "
            "The upload may have been interrupted; upload it again.",
        ) from exc
    try:
        _check_count(len(archive.infolist()), limits)  # the end record can understate the directory
    except _Unreadable:
        archive.close()
        raise
    return archive


def _check_head(head: bytes) -> None:
    if not head:
        raise _Unreadable("zip.empty_file", "The uploaded file is empty (0 bytes). Upload the zip again.")
    if not head.startswith(ZIP_SIGNATURES):
        raise _Unreadable(
            "zip.not_a_zip",
            "The uploaded file is not a zip archive. Upload the OneRoster CSV files packed in a .zip file.",
        )


def _check_count(count: int | None, limits: ZipLimits) -> None:
    if count is not None and count > limits.max_entries:
        raise _Unreadable(
            "zip.too_many_entries",
            f"The zip holds {count} entries; at most {limits.max_entries} are accepted. "
            "A OneRoster zip needs only its CSV files.",
        )


def _declared_count(fp: BinaryIO) -> int | None:
    """The entry count in the zip's end record, or None when the record cannot be found."""
    size = fp.seek(0, 2)
    start = max(0, size - END_RECORD_SIZE - MAX_COMMENT)
    fp.seek(start)
    tail = fp.read()
    at = tail.rfind(END_RECORD)
    if at < 0 or len(tail) - at < END_RECORD_SIZE:
        return None
    count = int.from_bytes(tail[at + 10 : at + 12], "little")
    if count != 0xFFFF:
        return count
    real = _zip64_count(fp, start + at)
    return count if real is None else real


def _zip64_count(fp: BinaryIO, end_record_at: int) -> int | None:
    """A zip64 archive keeps the real count in a record just before its locator, as zipfile assumes."""
    locator_at = end_record_at - 20
    record_at = locator_at - ZIP64_RECORD_SIZE
    if record_at < 0:
        return None
    fp.seek(record_at)
    record = fp.read(ZIP64_RECORD_SIZE + 4)
    if record[:4] != ZIP64_END_RECORD or record[ZIP64_RECORD_SIZE:] != ZIP64_LOCATOR:
        return None
    return int.from_bytes(record[32:40], "little")


# --- choosing the entries -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Context:
    findings: Findings
    mode: Mode
    limits: ZipLimits
    exact: frozenset[str]
    folded: dict[str, str]  # lower-cased name -> canonical name

    def canonical(self, base: str) -> str | None:
        return base if base in self.exact else self.folded.get(base.lower())

    def report(
        self, info: zipfile.ZipInfo, code: str, severity: Severity, message: str, value: str | None = None
    ) -> None:
        """A finding about one entry: its OneRoster file name (when it has one) as the file, and as the value
        what is wrong with it, by default its name in the zip."""
        name = info.orig_filename
        self.findings.add(code, severity, message, file=self.canonical(_base(name)), value=value or name)


@dataclass(frozen=True, slots=True)
class _Refusal:
    code: str
    severity: Severity
    template: str  # formatted with name= and method=
    applies: Callable[[zipfile.ZipInfo], bool]


def _is_unsafe(name: str) -> bool:
    # A backslash is a separator to Windows tools, so "..\x" climbs there even though it is one name here.
    return (
        name.startswith("/")
        or DRIVE.match(name) is not None
        or "\\" in name
        or "\0" in name
        or ".." in name.split("/")
    )


def _is_artefact(info: zipfile.ZipInfo) -> bool:
    parts = info.filename.lower().split("/")
    return "__macosx" in parts or parts[-1] in ARTEFACT_FILES


UNSAFE = _Refusal(
    "zip.unsafe_name",
    Severity.ERROR,
    "The entry {name} has a name that could point outside the zip (an absolute path, '..', a backslash "
    "or a NUL character); it was ignored.",
    lambda info: _is_unsafe(info.orig_filename),
)
# Checked in order after UNSAFE, on file entries only; the first that applies is reported.
REFUSALS = (
    _Refusal(
        "zip.ignored_entry",
        Severity.WARNING,
        "The entry {name} is a file the operating system adds to archives, not roster data; it was ignored.",
        _is_artefact,
    ),
    _Refusal(
        "zip.symlink_entry",
        Severity.ERROR,
        "The entry {name} is a symbolic link, not a file; it was ignored.",
        lambda info: stat.S_ISLNK(info.external_attr >> 16),
    ),
    _Refusal(
        "zip.encrypted_entry",
        Severity.ERROR,
        "The entry {name} is protected by a password, so it cannot be read; it was ignored. "
        "Zip the files without a password.",
        lambda info: bool(info.flag_bits & ENCRYPTED),
    ),
    _Refusal(
        "zip.unsupported_compression",
        Severity.ERROR,
        "The entry {name} is compressed with a method rosterd cannot read (method {method}); it was ignored. "
        "Use ordinary zip compression (deflate).",
        lambda info: info.compress_type not in METHODS or bool(info.flag_bits & PATCHED_DATA),
    ),
    _Refusal(
        "zip.nested_zip",
        Severity.ERROR,
        "The entry {name} is itself a zip file; it was ignored. Put the CSV files directly in the zip you upload.",
        lambda info: info.filename.lower().endswith(".zip"),
    ),
)


def _refusal(info: zipfile.ZipInfo) -> _Refusal | None:
    if UNSAFE.applies(info):
        return UNSAFE
    if info.is_dir():
        return None  # folders hold no data; the files in them are judged one by one
    return next((r for r in REFUSALS if r.applies(info)), None)


def _screen(infos: Iterable[zipfile.ZipInfo], context: _Context) -> list[zipfile.ZipInfo]:
    """The file entries that could be OneRoster files, wherever they sit."""
    kept = []
    for info in infos:
        refusal = _refusal(info)
        if refusal is not None:
            message = refusal.template.format(name=_quote(info.orig_filename), method=info.compress_type)
            context.report(info, refusal.code, refusal.severity, message)
        elif not info.is_dir():
            kept.append(info)
    return kept


def _package_folder(infos: list[zipfile.ZipInfo], context: _Context) -> str:
    """The folder the package is read from: the root when it holds any OneRoster file, else the folder
    holding the most of them (ties go to the first name), so one stray file cannot move the package."""
    found = {(_folder(i.filename), name) for i in infos if (name := context.canonical(_base(i.filename)))}
    counts = Counter(folder for folder, _ in found)
    if not counts or counts[""]:
        return ""
    return min(counts, key=lambda folder: (-counts[folder], folder))


def _place(infos: list[zipfile.ZipInfo], context: _Context) -> list[zipfile.ZipInfo]:
    folder = _package_folder(infos, context)
    where = f"the folder {_quote(folder)}" if folder else "the top of the zip"
    if folder:
        read = "; they were read from there" if context.mode is Mode.LENIENT else ""
        context.findings.add(
            "zip.top_level_folder",
            context.mode.deviation(),
            f"The OneRoster files are inside the folder {_quote(folder)} instead of at the top of the zip{read}. "
            "Zip the CSV files themselves, not the folder that holds them.",
            value=folder,
        )
    placed = []
    for info in infos:
        if _folder(info.filename) == folder:
            placed.append(info)
        else:
            message = (
                f"The entry {_quote(info.filename)} was ignored: it is outside {where}, "
                "which holds the OneRoster files."
            )
            context.report(info, "zip.misplaced_entry", Severity.ERROR, message)
    return placed


def _name(infos: list[zipfile.ZipInfo], context: _Context) -> dict[str, zipfile.ZipInfo]:
    """Canonical name -> entry, for the entries whose names are OneRoster file names (first one wins)."""
    chosen: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        shown, base = _quote(info.filename), _base(info.filename)
        name = context.canonical(base)
        if name is None:
            message = (
                f"The entry {shown} is not a OneRoster file, so it was not read. A package holds only OneRoster CSV "
                "files, under their exact (case-sensitive) names: remove it, or give it its OneRoster name."
            )
            context.report(info, "zip.unknown_file", Severity.ERROR, message)
        elif name in chosen:
            message = f"The entry {shown} is a second {name}; only {_quote(chosen[name].filename)} was read."
            context.report(info, "zip.duplicate_entry", Severity.ERROR, message)
        else:
            if name != base:
                read = f"was read as {name}" if context.mode is Mode.LENIENT else f"should be named {name}"
                message = f"The entry {shown} {read}; OneRoster names are case-sensitive, so rename it."
                context.report(info, "zip.file_name_case", context.mode.deviation(), message)
            chosen[name] = info
    return chosen


# --- limits and reading ---------------------------------------------------------------------------------


def _within_ratio(infos: dict[str, zipfile.ZipInfo], context: _Context) -> dict[str, zipfile.ZipInfo]:
    kept = {}
    for name, info in infos.items():
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_FLOOR and ratio > context.limits.max_ratio:
            message = (
                f"The entry {_quote(info.filename)} would grow from {_size(info.compress_size)} to "
                f"{_size(info.file_size)} when decompressed, more than {context.limits.max_ratio:g} times; "
                "a file like this (a zip bomb) is not read."
            )
            context.report(info, "zip.ratio_exceeded", Severity.ERROR, message, value=f"{ratio:.0f}:1")
        else:
            kept[name] = info
    return kept


def _too_large(infos: dict[str, zipfile.ZipInfo], context: _Context) -> bool:
    total = sum(info.file_size for info in infos.values())
    if total <= context.limits.max_total_bytes:
        return False
    context.findings.add(
        "zip.too_large",
        Severity.ERROR,
        f"The OneRoster files in the zip add up to {_size(total)} when decompressed, more than the limit "
        f"of {_size(context.limits.max_total_bytes)}; nothing was read.",
        value=_size(total),
    )
    return True


def _inflate(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """Decompress in chunks, stopping as soon as the entry outgrows its declared size: that size is what
    the limits were checked against, so it must also bound what we hold in memory."""
    total = 0
    with archive.open(info) as stream:
        while chunk := stream.read(CHUNK):
            total += len(chunk)
            if total > info.file_size:
                raise zipfile.BadZipFile("more data than its declared size")
            yield chunk
    if total != info.file_size:
        raise zipfile.BadZipFile("less data than its declared size")


def _folder(name: str) -> str:
    return name.rpartition("/")[0]


def _base(name: str) -> str:
    return name.rpartition("/")[2]


def _quote(name: str) -> str:
    return repr(clip(name))


def _size(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"
