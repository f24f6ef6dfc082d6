"""Hostile and broken uploads: named cases built in memory from one small valid package.

Every case starts from the same generated district (one school, 20 students, 2 teachers) and breaks one
thing: the zip container, the manifest, a file's text, a header, a row, or a reference between files. Each
says which finding codes rosterd's answer must hold (`expect`), where the main ones must point (`where`)
and whether lenient mode accepts it (`accepted`: only where the deviation is documented as tolerated).

Zips are assembled here byte by byte (`assemble`) rather than with zipfile, because most of these are zips
zipfile would refuse to write: lying sizes and counts, symlink and encrypted flags, absolute names, a
100 MB entry that is never held in memory. The whole set is about 1 MB and builds in about a second.

    from tests.hostile import build_cases
    for case in build_cases(): ...

`build_cases(scale)` takes sizes from a `Scale`; bench/hostile.py builds the same cases with larger ones.
"""

from __future__ import annotations

import functools
import random
import stat
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import polars as pl

from daemon.generator import generate as gen

SPEC = gen.DistrictSpec(schools=1, students_per_school=20, teachers_per_school=2)
MIB = 1 << 20
Tables = dict[str, pl.DataFrame]
Files = dict[str, bytes]


# --- what a case is ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """Where a finding must point: at least one finding of the code has exactly these fields."""

    file: str | None
    row: int | None = None
    column: str | None = None


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    expect: set[str] | None  # finding codes the receipt must contain (counts_by_code)
    accepted: bool = False  # True only where lenient mode documents the deviation as tolerated
    where: Mapping[str, Where] = field(default_factory=dict)  # code -> a location one of its findings has
    note: str = ""


@dataclass(frozen=True)
class Scale:
    """Sizes of the large cases. The defaults keep the whole set small enough for the e2e suite."""

    long_line_bytes: int = 100 * MIB  # one line in users.csv: compresses ~1000:1, so it is a ratio bomb
    bomb_bytes: int = 50 * MIB  # zeros behind users.csv
    size_lie_bytes: int = 20 * MIB  # what an entry that declares 1 KB really inflates to
    header_columns: int = 100_000
    many_entries: int = 300
    over_limit_line_bytes: int = 9 * MIB  # one line, past the 1 MiB limit and the 8 MiB chunk, under the ratio
    near_limit_line_bytes: int = 900_000  # one line just under the 1 MiB limit
    long_value_bytes: int = 200_000  # one enum cell
    header_cell_bytes: int = 200_000  # one header cell, with no line break after it


# --- assembling zips ------------------------------------------------------------------------------------

STORED, DEFLATED = 0, 8
UTF8_NAME = 0x800
ENCRYPTED = 0x1
DOS_TIME, DOS_DATE = 0, (2026 - 1980) << 9 | 1 << 5 | 1  # 2026-01-01 00:00: the same bytes every run
REGULAR = (stat.S_IFREG | 0o644) << 16
SYMLINK = (stat.S_IFLNK | 0o777) << 16


@dataclass(frozen=True)
class Member:
    """One zip entry as written: the payload as stored plus what the headers declare about it."""

    name: str
    payload: bytes  # the bytes after the local header (compressed already when method is DEFLATED)
    size: int  # declared uncompressed size
    crc: int
    method: int = DEFLATED
    flags: int = 0
    external_attr: int = REGULAR
    offset_of: str | None = None  # point the directory record at another member's local header
    stored_size: int | None = None  # the compressed size the directory claims, when it lies

    @classmethod
    def of(cls, name: str, data: bytes, **headers) -> Member:
        return cls(name, deflate(data), len(data), zlib.crc32(data), **headers)

    def but(self, **changes) -> Member:
        return Member(**{**self.__dict__, **changes})


def deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, as zip stores it
    return packer.compress(data) + packer.flush()


def deflated_repeats(block: bytes, times: int) -> tuple[bytes, int]:
    """Raw deflate of `block` repeated `times` times, and its CRC-32, without ever holding the whole.

    After a full flush the compressor forgets everything before it, so each repeat of the block compresses
    to the same bytes: the stream is that piece `times` over, then an empty final block.
    """
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(times):
        crc = zlib.crc32(block, crc)
    return piece * times + packer.flush(zlib.Z_FINISH), crc


def assemble(members: list[Member], *, declared_count: int | None = None) -> bytes:
    """A zip of `members` in order: local headers and data, the central directory, the end record."""
    body, directory, offsets = bytearray(), bytearray(), []
    for m in members:
        name = m.name.encode("utf-8")
        flags = m.flags | (UTF8_NAME if not m.name.isascii() else 0)
        offsets.append(len(body))
        body += struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, flags, m.method, DOS_TIME, DOS_DATE, m.crc,
                            len(m.payload), m.size, len(name), 0)  # fmt: skip
        body += name + m.payload
    first = {}
    for index, m in enumerate(members):
        first.setdefault(m.name, index)
    for index, m in enumerate(members):
        name = m.name.encode("utf-8")
        flags = m.flags | (UTF8_NAME if not m.name.isascii() else 0)
        offset = offsets[first[m.offset_of] if m.offset_of else index]
        directory += struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 3 << 8 | 20, 20, flags, m.method, DOS_TIME,
                                 DOS_DATE, m.crc, m.stored_size or len(m.payload), m.size, len(name), 0, 0, 0, 0,
                                 m.external_attr,
                                 offset)  # fmt: skip
        directory += name
    count = len(members) if declared_count is None else declared_count
    zip64 = b""
    if count > 0xFFFF:  # the count lives in a zip64 end record; the classic one says "see there"
        record = struct.pack("<4sQ2H2I4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(directory),
                             len(body))  # fmt: skip
        zip64 = record + struct.pack("<4sIQI", b"PK\x06\x07", 0, len(body) + len(directory), 1)
        count = 0xFFFF
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, count, count, len(directory), len(body), 0)
    return bytes(body + directory + zip64 + end)


def zipped(files: Files) -> bytes:
    return assemble([Member.of(name, data) for name, data in files.items()])


# --- the valid package and ways to change it --------------------------------------------------------------


@functools.cache
def _district() -> Tables:
    return gen.generate(SPEC)


def tables() -> Tables:
    return dict(_district())


def files(t: Mapping[str, pl.DataFrame] | None = None, version: str = "1.1", mode: str = "bulk") -> Files:
    return gen.package_entries(t if t is not None else _district(), version, mode)


def valid_zip() -> bytes:
    return zipped(files())


def edit(entity: str, rows: tuple[int, ...] = (0,), base: Tables | None = None, **values: str) -> Tables:
    """The district with some cells of some rows (0-based data rows) of one table set to `values`."""
    t = dict(base if base is not None else _district())
    chosen = pl.int_range(pl.len()).is_in(list(rows))
    t[entity] = t[entity].with_columns(
        pl.when(chosen).then(pl.lit(value)).otherwise(pl.col(column)).alias(column) for column, value in values.items()
    )
    return t


def raw_cell(entity: str, column: str, raw: bytes, row: int = 0) -> Files:
    """The package with `raw` written as one cell exactly as given: no CSV quoting, no encoding."""
    marker = f"@@RAW-CELL-{entity}-{column}@@"
    out = files(edit(entity, (row,), **{column: marker}))
    out[f"{entity}.csv"] = out[f"{entity}.csv"].replace(marker.encode(), raw, 1)
    return out


def with_file(name: str, data: bytes) -> Files:
    return {**files(), name: data}


def without(*names: str) -> Files:
    return {n: d for n, d in files().items() if n not in names}


def manifest_with(**changes: str | None) -> bytes:
    """The generated manifest with properties set (keyword `file__users` is `file.users`), or removed (None)."""
    lines = files()["manifest.csv"].decode().splitlines()
    props = dict(line.split(",", 1) for line in lines[1:])
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
    return ("propertyName,value\n" + "".join(f"{k},{v}\n" for k, v in props.items())).encode()


def header_swap(entity: str, old: str, new: str) -> Files:
    """The package with one header cell of a file renamed (only the header line changes)."""
    out = files()
    head, rest = out[f"{entity}.csv"].split(b"\n", 1)
    cells = head.decode().split(",")
    cells[cells.index(old)] = new
    out[f"{entity}.csv"] = ",".join(cells).encode() + b"\n" + rest
    return out


def first_rows(entity: str, keep: int) -> bytes:
    """The entity's file cut to its header and first `keep` rows."""
    lines = files()[f"{entity}.csv"].split(b"\n")
    return b"\n".join(lines[: keep + 1]) + b"\n"


# --- the cases --------------------------------------------------------------------------------------------

W = Where
U, E, C, S, O, K = "users.csv", "enrollments.csv", "classes.csv", "academicSessions.csv", "orgs.csv", "courses.csv"
M = "manifest.csv"


def _container(scale: Scale) -> Iterator[Case]:
    whole = valid_zip()
    yield Case("empty-file", b"", {"zip.empty_file"}, where={"zip.empty_file": W(None)})
    yield Case("not-a-zip", files()["orgs.csv"], {"zip.not_a_zip"}, where={"zip.not_a_zip": W(None)})
    yield Case("gzip-not-zip", b"\x1f\x8b\x08\x00" + zlib.compress(files()["users.csv"]), {"zip.not_a_zip"})
    yield Case("truncated-zip", whole[: len(whole) // 2], {"zip.truncated"}, where={"zip.truncated": W(None)})
    yield Case("empty-zip", assemble([]), {"package.missing_manifest"},
               note="22 bytes: an end record and nothing else")  # fmt: skip

    members = [Member.of(n, d) for n, d in files().items()]
    users_at = next(i for i, m in enumerate(members) if m.name == U)

    payload, crc = deflated_repeats(bytes(MIB), scale.bomb_bytes // MIB)
    bomb = [*members[:users_at], Member(U, payload, scale.bomb_bytes, crc), *members[users_at + 1 :]]
    yield Case("bomb-ratio", assemble(bomb), {"zip.ratio_exceeded", "manifest.file_missing"},
               where={"zip.ratio_exceeded": W(U), "manifest.file_missing": W(U)},
               note=f"users.csv is {scale.bomb_bytes // MIB} MiB of zeros")  # fmt: skip

    filler = [Member.of(f"notes/n{i:05}.txt", b"x") for i in range(scale.many_entries)]
    yield Case("bomb-many-entries", assemble([*members, *filler]), {"zip.too_many_entries"})
    held = len(members) + len(filler)
    yield Case("bomb-entry-count-lies", assemble([*members, *filler], declared_count=len(members)),
               {"zip.too_many_entries"}, note=f"the end record claims {len(members)} entries of {held}")  # fmt: skip

    yield Case("nested-zip", assemble([*members, Member.of("roster.zip", whole)]), {"zip.nested_zip"},
               where={"zip.nested_zip": W(None)})  # fmt: skip
    yield Case("nested-zip-only", assemble([Member.of("roster.zip", whole)]),
               {"zip.nested_zip", "package.missing_manifest"})  # fmt: skip

    # Each data entry declares 600 MiB from 4 MiB (150:1, under the ratio limit): over the 4 GiB total limit.
    claims = [m.but(size=600 * MIB, stored_size=4 * MIB) if m.name != "manifest.csv" else m for m in members]
    yield Case("bomb-declared-total", assemble(claims), {"zip.too_large"}, where={"zip.too_large": W(None)},
               note="the directory claims 4.1 GiB; nothing is read")  # fmt: skip
    yield Case("size-lie", assemble(_size_lie(members, users_at, scale)), {"zip.corrupt_entry"},
               where={"zip.corrupt_entry": W(U)},
               note=f"users.csv declares 1000 bytes and inflates to {scale.size_lie_bytes // MIB} MiB")  # fmt: skip

    corrupt = list(members)
    bad = bytearray(corrupt[users_at].payload)
    bad[len(bad) // 2] ^= 0xFF
    corrupt[users_at] = corrupt[users_at].but(payload=bytes(bad))
    yield Case("corrupt-entry-data", assemble(corrupt), {"zip.corrupt_entry"}, where={"zip.corrupt_entry": W(U)})

    overlap = [m for m in members if m.name != "demographics.csv"]
    overlap.append(members[users_at].but(name="demographics.csv", offset_of=U))
    yield Case("overlapping-entries", assemble(overlap), {"zip.corrupt_entry"},
               where={"zip.corrupt_entry": W("demographics.csv")},
               note="demographics.csv's directory record points at users.csv's data")  # fmt: skip

    for label, name in (("dotdot", "../../etc/users.csv"), ("absolute", "/etc/cron.d/users.csv"),
                        ("backslash", "..\\..\\users.csv"), ("drive-letter", "C:/Windows/users.csv")):  # fmt: skip
        yield Case(f"zip-slip-{label}", assemble([*members, Member.of(name, files()[U])]), {"zip.unsafe_name"},
                   where={"zip.unsafe_name": W(U if "\\" not in name else None)})  # fmt: skip

    link = Member.of(U, b"/etc/passwd", method=STORED).but(payload=b"/etc/passwd", external_attr=SYMLINK)
    yield Case("symlink-entry", assemble([*members[:users_at], link, *members[users_at + 1 :]]),
               {"zip.symlink_entry", "manifest.file_missing"}, where={"zip.symlink_entry": W(U)})  # fmt: skip

    locked = members[users_at].but(flags=ENCRYPTED)
    yield Case("encrypted-entry", assemble([*members[:users_at], locked, *members[users_at + 1 :]]),
               {"zip.encrypted_entry", "manifest.file_missing"}, where={"zip.encrypted_entry": W(U)})  # fmt: skip

    zstd = members[users_at].but(method=93)
    yield Case("unsupported-compression", assemble([*members[:users_at], zstd, *members[users_at + 1 :]]),
               {"zip.unsupported_compression"}, where={"zip.unsupported_compression": W(U)})  # fmt: skip

    twin = Member.of(U, first_rows("users", 3))
    yield Case("duplicate-entry", assemble([*members, twin]), {"zip.duplicate_entry"},
               where={"zip.duplicate_entry": W(U)})  # fmt: skip
    yield Case("duplicate-entry-by-case", assemble([*members, Member.of("USERS.csv", files()[U])]),
               {"zip.duplicate_entry"}, where={"zip.duplicate_entry": W(U)})  # fmt: skip


def _size_lie(members: list[Member], at: int, scale: Scale) -> list[Member]:
    payload, crc = deflated_repeats(b"a" * MIB, scale.size_lie_bytes // MIB)
    liar = Member(U, payload, 1000, crc)
    return [*members[:at], liar, *members[at + 1 :]]


def _manifest(scale: Scale) -> Iterator[Case]:
    yield Case("missing-manifest", zipped(without("manifest.csv")), {"package.missing_manifest"})
    only_absent = gen.manifest_bytes("1.1", {})
    yield Case("only-manifest-no-changes", zipped({"manifest.csv": only_absent}), {"package.no_changes"},
               accepted=True, note="every file absent: nothing changed (documented as accepted)")  # fmt: skip
    yield Case("only-manifest-declaring-files", zipped({"manifest.csv": files()["manifest.csv"]}),
               {"manifest.file_missing"}, where={"manifest.file_missing": W(U)})  # fmt: skip
    yield Case("manifest-names-absent-file", zipped(without(C)), {"manifest.file_missing"},
               where={"manifest.file_missing": W(C)})  # fmt: skip
    def manifest(**changes: str) -> bytes:
        return zipped(with_file(M, manifest_with(**changes)))

    yield Case("manifest-absent-file-present", manifest(file__users="absent"), {"manifest.file_unexpected"},
               where={"manifest.file_unexpected": W(U)})  # fmt: skip
    yield Case("manifest-unsupported-version", manifest(oneroster__version="3.0"), {"manifest.unsupported_version"},
               where={"manifest.unsupported_version": W(M, 3)})  # fmt: skip
    yield Case("manifest-invalid-mode", manifest(file__users="full"), {"manifest.invalid_file_mode"},
               where={"manifest.invalid_file_mode": W(M, 16)})  # fmt: skip
    semicolons = b"name;value\n" + files()[M].split(b"\n", 1)[1]
    yield Case("manifest-bad-header", zipped(with_file(M, semicolons)), {"manifest.invalid_header"},
               where={"manifest.invalid_header": W(M, 1)})  # fmt: skip


def _text(scale: Scale) -> Iterator[Case]:
    users = files()[U].decode()
    latin1 = with_file(U, users.encode("latin-1"))
    yield Case("latin1-users", zipped(latin1), {"csv.invalid_utf8"}, where={"csv.invalid_utf8": W(U, 2)},
               note="Fernández-López on row 2 is Latin-1")  # fmt: skip
    yield Case("utf16-bom-users", zipped(with_file(U, users.encode("utf-16"))), {"csv.utf16"},
               where={"csv.utf16": W(U)})  # fmt: skip
    yield Case("ebcdic-users", zipped(with_file(U, users.encode("cp500"))), {"csv.invalid_utf8"},
               where={"csv.invalid_utf8": W(U, 1)}, note="a file in an encoding nobody should guess")  # fmt: skip
    lines = users.encode().split(b"\n")
    glued = b"\n".join(lines[:11]) + b"\n" + "\ufeff".encode() + b"\n".join([lines[0], *lines[11:]])
    yield Case("bom-mid-file", zipped(with_file(U, "\ufeff".encode() + glued)), {"row.invalid_boolean"},
               where={"row.invalid_boolean": W(U, 12, "enabledUser")},
               note="two exports glued together: the second one's BOM and header land on row 12")  # fmt: skip
    yield Case("nul-bytes", zipped(raw_cell("users", "givenName", b"Ada\x00\x00\x00", row=1)), {"csv.nul_byte"},
               where={"csv.nul_byte": W(U)})  # fmt: skip
    yield Case("line-break-quoted", zipped(files(edit("users", (1,), givenName="Anne\nMarie"))),
               {"csv.line_break_in_quoted_field"}, where={"csv.line_break_in_quoted_field": W(U, 3)})  # fmt: skip
    yield Case("line-break-unquoted", zipped(raw_cell("users", "givenName", b"Anne\nMarie", row=1)),
               {"row.width_mismatch"}, where={"row.width_mismatch": W(U, 3)})  # fmt: skip
    yield Case("bare-carriage-return", zipped(raw_cell("users", "givenName", b"Anne\rMarie", row=1)),
               {"csv.bare_carriage_return"}, where={"csv.bare_carriage_return": W(U, 3)})  # fmt: skip
    yield Case("quote-never-closed", zipped(raw_cell("users", "givenName", b'"Anne', row=1)),
               {"csv.line_break_in_quoted_field"}, where={"csv.line_break_in_quoted_field": W(U, 3)})  # fmt: skip
    yield Case("stray-quote", zipped(raw_cell("users", "givenName", b'An"ne', row=1)), {"csv.unescaped_quote"},
               where={"csv.unescaped_quote": W(U, 3)})  # fmt: skip
    yield Case("control-characters-in-id", zipped(raw_cell("users", "sourcedId", b"stu\x1b[31m\x07-0001", row=1)),
               {"row.invalid_sourced_id"}, where={"row.invalid_sourced_id": W(U, 3, "sourcedId")})  # fmt: skip

    payload, crc = deflated_repeats(b"A" * MIB, scale.long_line_bytes // MIB)
    members = [Member.of(n, d) for n, d in files().items() if n != U]
    members.append(Member(U, payload, scale.long_line_bytes, crc))
    yield Case("one-100mb-line", assemble(members), {"zip.ratio_exceeded"}, where={"zip.ratio_exceeded": W(U)},
               note="users.csv is a single line of 'A's without a line break")  # fmt: skip

    long_id = _low_entropy(scale.over_limit_line_bytes)
    yield Case("line-over-1mib", zipped(raw_cell("users", "sourcedId", long_id, row=1)), {"csv.line_too_long"},
               where={"csv.line_too_long": W(U, 3)},
               note="a 9 MiB sourcedId, compressed under the ratio limit: longer than a line may be")  # fmt: skip
    near_id = _low_entropy(scale.near_limit_line_bytes)
    yield Case("line-just-under-1mib", zipped(raw_cell("users", "sourcedId", near_id, row=1)),
               {"row.invalid_sourced_id"}, where={"row.invalid_sourced_id": W(U, 3, "sourcedId")},
               note="a 900 KB sourcedId: read, and refused as a key")  # fmt: skip


def _low_entropy(size: int) -> bytes:
    """`size` bytes of letters that deflate about 100:1: long runs broken by a pseudo-random letter, so the
    entry stays under the 200:1 ratio limit and is really read."""
    rng = random.Random(20261201)
    out = bytearray()
    while len(out) < size:
        out += b"x" * rng.randrange(40, 90) + bytes([rng.randrange(97, 123)])
    return bytes(out[:size])


def _headers(scale: Scale) -> Iterator[Case]:
    out = files()
    head, rest = out[U].split(b"\n", 1)
    extra = b"".join(b",x%06d" % i for i in range(scale.header_columns))
    yield Case("header-100k-columns", zipped(with_file(U, head + extra + b"\n" + rest)),
               {"header.unknown_column", "row.width_mismatch"}, where={"header.unknown_column": W(U, 1, "x000000")},
               note="100,000 unknown-column findings: a receipt lists only the first 1000 findings, all of them "
               "header ones, so the row findings are counted but not shown")  # fmt: skip
    yield Case("header-only-users", zipped(with_file(U, head + b"\n")), {"csv.no_data_rows"},
               where={"csv.no_data_rows": W(U)})  # fmt: skip
    yield Case("header-duplicate-column", zipped(header_swap("users", "familyName", "givenName")),
               {"header.duplicate_column", "header.missing_column"},
               where={"header.duplicate_column": W(U, 1, "givenName"),
                      "header.missing_column": W(U, 1, "familyName")})  # fmt: skip
    yield Case("header-unusable-semicolons", zipped(with_file(C, out[C].replace(b",", b";"))), {"header.unusable"},
               where={"header.unusable": W(C, 1)})  # fmt: skip
    yield Case("header-stray-quote", zipped(with_file(O, b'sourcedId,"status' + out[O][len(b"sourcedId,status"):])),
               {"csv.unescaped_quote"}, where={"csv.unescaped_quote": W(O, 1)})  # fmt: skip
    yield Case("empty-data-file", zipped(with_file(K, b"")), {"csv.empty_file"}, where={"csv.empty_file": W(K)})
    # One cell of 200,000 characters on the first line: over the csv module's field limit (128 KiB), and under
    # the 1 MiB below which no compression ratio is checked, so a 1 KB upload carries it.
    huge_cell = b"A" * scale.header_cell_bytes
    yield Case("header-one-huge-cell", zipped(with_file(U, huge_cell)), {"header.unusable"},
               where={"header.unusable": W(U, 1)}, note="users.csv is one cell, with no line break at all")  # fmt: skip
    yield Case("manifest-one-huge-cell", zipped(with_file(M, huge_cell + b"\n")), {"manifest.invalid_header"},
               where={"manifest.invalid_header": W(M, 1)})  # fmt: skip
    no_manifest = {n: d for n, d in with_file(U, b"userId," + huge_cell + b"\n").items() if n != M}
    yield Case("no-manifest-huge-first-line", zipped(no_manifest), {"package.oneroster_1_0"},
               where={"package.oneroster_1_0": W(U, 1)},
               note="without a manifest, the first lines are read to tell OneRoster 1.0 apart")  # fmt: skip


def _rows(scale: Scale) -> Iterator[Case]:
    short = files()
    lines = short[E].split(b"\n")
    lines[3] = lines[3].rsplit(b",", 2)[0]  # two cells short
    lines[5] = lines[5] + b",extra"
    short[E] = b"\n".join(lines)
    yield Case("wrong-column-counts", zipped(short), {"row.width_mismatch"}, where={"row.width_mismatch": W(E, 4)})

    t = tables()
    t["classes"] = pl.concat([t["classes"], t["classes"].slice(3, 1).with_columns(title=pl.lit("Twin"))])
    yield Case("duplicate-sourcedid", zipped(files(t)), {"row.duplicate_sourced_id"},
               where={"row.duplicate_sourced_id": W(C, 5, "sourcedId")})  # fmt: skip

    yield Case("invalid-enum", zipped(files(edit("classes", (0,), classType="lab"))), {"row.invalid_enum"},
               where={"row.invalid_enum": W(C, 2, "classType")})  # fmt: skip
    yield Case("invalid-date", zipped(files(edit("academicSessions", (1,), endDate="2026-02-30"))),
               {"row.invalid_date"}, where={"row.invalid_date": W(S, 3, "endDate")})  # fmt: skip
    yield Case("us-style-dates", zipped(files(edit("academicSessions", (0, 1, 2), startDate="8/15/2026"))),
               {"row.invalid_date"}, where={"row.invalid_date": W(S, 2, "startDate")})  # fmt: skip
    yield Case("year-out-of-range", zipped(files(edit("academicSessions", (0,), schoolYear="20270"))),
               {"row.invalid_year"}, where={"row.invalid_year": W(S, 2, "schoolYear")})  # fmt: skip
    yield Case("date-five-digit-year", zipped(files(edit("academicSessions", (0,), endDate="20270-06-12"))),
               {"row.invalid_date"}, where={"row.invalid_date": W(S, 2, "endDate")})  # fmt: skip
    yield Case("invalid-boolean", zipped(files(edit("users", (1,), enabledUser="yes"))), {"row.invalid_boolean"},
               where={"row.invalid_boolean": W(U, 3, "enabledUser")})  # fmt: skip
    yield Case("long-enum-value", zipped(files(edit("users", (1,), role="r" * scale.long_value_bytes))),
               {"row.invalid_enum"}, where={"row.invalid_enum": W(U, 3, "role")})  # fmt: skip
    yield Case("long-sourcedid", zipped(files(edit("orgs", (1,), identifier="9" * 300, sourcedId="s" * 300))),
               {"row.invalid_sourced_id"}, where={"row.invalid_sourced_id": W(O, 3, "sourcedId")})  # fmt: skip
    yield Case("missing-required-value", zipped(files(edit("users", (4,), role=""))),
               {"row.missing_required_value"}, where={"row.missing_required_value": W(U, 6, "role")})  # fmt: skip


def _references(scale: Scale) -> Iterator[Case]:
    """One broken reference of each kind. Enrollments are 132 rows, so two are broken there: one dropped row
    (0.8%) would be under the 1% a file may lose, and the upload accepted without it."""
    missing = "reference.missing_target_record"
    breaks = (
        ("class-course", "classes", (0,), "courseSourcedId", "crs-gone", C, 2),
        ("class-school", "classes", (1,), "schoolSourcedId", "sch-gone", C, 3),
        ("class-term", "classes", (2,), "termSourcedIds", "sem-gone", C, 4),
        ("enrollment-user", "enrollments", (3, 4), "userSourcedId", "stu-gone", E, 5),
        ("enrollment-class", "enrollments", (5, 6), "classSourcedId", "cls-gone", E, 7),
        ("user-org", "users", (5,), "orgSourcedIds", "sch-gone", U, 7),
        ("course-org", "courses", (1,), "orgSourcedId", "org-gone", K, 3),
    )
    for label, entity, rows, column, value, file, shown in breaks:
        yield Case(f"ref-{label}", zipped(files(edit(entity, rows, **{column: value}))), {missing},
                   where={missing: W(file, shown, column)})  # fmt: skip
    yield Case("ref-session-parent", zipped(files(edit("academicSessions", (1,), parentSourcedId="ay-gone"))),
               {missing}, accepted=True, where={missing: W(S, 3, "parentSourcedId")},
               note="an optional reference: lenient mode clears it with a warning (documented)")  # fmt: skip
    yield Case("ref-school-is-district", zipped(files(edit("enrollments", (0, 1), schoolSourcedId=gen.DISTRICT))),
               {"reference.target_type_mismatch"},
               where={"reference.target_type_mismatch": W(E, 2, "schoolSourcedId")})  # fmt: skip
    cycle = edit("orgs", (0,), parentSourcedId="sch-0001")
    yield Case("org-parent-cycle", zipped(files(cycle)), {"reference.parent_cycle"},
               where={"reference.parent_cycle": W(O, 2, "parentSourcedId")},
               note="the district's parent is its own school")  # fmt: skip
    loop = edit("academicSessions", (0,), parentSourcedId="sem-2027-1")
    yield Case("session-parent-cycle", zipped(files(loop)), {"reference.parent_cycle"},
               where={"reference.parent_cycle": W(S, 2, "parentSourcedId")},
               note="the school year's parent is its own first semester")  # fmt: skip


def _versions(scale: Scale) -> Iterator[Case]:
    t = tables()
    old = {
        "orgs": t["orgs"],
        "academicSessions": t["academicSessions"],
        "courses": t["courses"].rename({"schoolYearSourcedId": "schoolYearId", "grades": "grade"}),
        "classes": t["classes"].rename({"grades": "grade", "termSourcedIds": "termSourcedId"}),
        "users": t["users"].rename({"userIds": "userId", "agentSourcedIds": "agents"}),
        "enrollments": t["enrollments"],
    }
    v10 = {f"{name}.csv": gen.to_csv_bytes(frame) for name, frame in old.items()}
    yield Case("oneroster-1.0", zipped(v10), {"package.oneroster_1_0"},
               where={"package.oneroster_1_0": W(U, 1)})  # fmt: skip

    v12_users = gen.to_csv_bytes(gen.generate(gen.DistrictSpec(**{**SPEC.__dict__, "version": "1.2"}))["users"])
    yield Case("mixed-versions", zipped(with_file(U, v12_users)), {"header.missing_column"},
               where={"header.missing_column": W(U, 1, "orgSourcedIds")},
               note="a 1.1 manifest with a 1.2 users.csv")  # fmt: skip

    delta = gen.delta_tables(_district(), "1.1", seed=1)
    delta["users"] = delta["users"].with_columns(status=pl.lit(""))
    yield Case("delta-without-status", zipped(files(delta, mode="delta")), {"row.field_required_in_delta"},
               where={"row.field_required_in_delta": W(U, 2, "status")})  # fmt: skip

    odd = {("USERS.CSV" if name == U else name): data for name, data in files().items()}
    yield Case("odd-case-file-name", zipped(odd), {"zip.file_name_case"}, accepted=True,
               where={"zip.file_name_case": W(U)},
               note="read as users.csv with a warning (documented lenient tolerance); the same roster")  # fmt: skip


GROUPS: tuple[Callable[[Scale], Iterator[Case]], ...] = (_container, _manifest, _text, _headers, _rows, _references,
                                                         _versions)  # fmt: skip


def build_cases(scale: Scale = Scale()) -> list[Case]:
    cases = [case for group in GROUPS for case in group(scale)]
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases
