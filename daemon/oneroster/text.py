"""CSV text: bytes of one file -> header cells and frames of string cells, one row per line.

OneRoster forbids line breaks inside fields, so every record is exactly one physical line and a finding's
row is the line number a person sees (header = 1). A file is read in chunks of whole lines. A chunk is
parsed straight from its bytes when byte counts prove every line well formed (the common case); otherwise
the structure of each of its lines (quotes, width, stray CR, bad UTF-8) is checked with polars string
expressions over all its lines at once, and only the lines that pass are parsed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import polars as pl

from daemon.oneroster.findings import Findings, Mode, Severity

UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# Bytes that never occur in CSV text; one that is absent from the file serves as a "no split" separator.
_SPARE_SEPARATORS = ("\x1f", "\x1e", "\x1d", "\x1c", "\x01", "\x02", "\x03")
QUOTED_FIELD = r'"(?:[^"]|"")*"'
# A quoted field that starts a cell; removing these leaves a quote only where one is stray.
FIELD_START_QUOTED = r'(^|,)"(?:[^"]|"")*"'
_FIELD = rf'(?:{QUOTED_FIELD}|[^",]*)'
WELL_FORMED = rf"^{_FIELD}(?:,{_FIELD})*$"
# A line that ends inside an opened quoted field: the record was broken by a line break.
OPEN_QUOTE_AT_END = rf'(?:^|,)"(?:[^"]|"")*$'
REPLACEMENT_CHAR = "\ufffd"


@dataclass(slots=True)
class RawTable:
    """A file after the text layer: header cells and the well-formed data rows as strings."""

    header: list[str]
    frame: pl.DataFrame  # columns c0..c{n-1} (String, blank = null) and `_row` (UInt32)
    data_rows: int  # data lines in the file (blank lines skipped in lenient mode not counted)
    dropped: int  # data lines dropped by the text layer
    dropped_ids: pl.Series  # first cell (the sourcedId) of those lines, so dependants see them as dropped


@dataclass(frozen=True, slots=True)
class Chunk:
    """Whole lines of a file with the byte counts the fast parse needs, counted where the chunk is made
    (the prefetch thread).

    Counting a byte costs a pass over the chunk with the GIL held, so only what the fast parse cannot learn
    more cheaply is counted: commas only in a chunk that holds a quote (without quotes, the lengths of the
    parsed values give the separators), carriage returns only in a chunk that holds one.
    """

    data: bytes
    newlines: int
    commas: int | None  # None when the chunk holds no quote
    quotes: bool
    crs: int  # carriage returns
    bare_cr: bool  # a carriage return that does not end a line

    @classmethod
    def of(cls, data: bytes) -> Chunk:
        quotes = b'"' in data
        crs = data.count(b"\r") if b"\r" in data else 0
        bare_cr = crs != 0 and crs != data.count(b"\r\n")
        return cls(data, data.count(b"\n"), data.count(b",") if quotes else None, quotes, crs, bare_cr)

    def after(self, head: bytes) -> Chunk:
        """This chunk without its first `len(head)` bytes (the header line and its line break)."""
        rest = self.data[len(head) :]
        quotes = self.quotes and b'"' in rest
        crs = self.crs - head.count(b"\r")
        bare_cr = self.bare_cr and crs != 0 and crs != rest.count(b"\r\n")
        commas = self.commas - head.count(b",") if quotes else None  # quotes here: the whole chunk had some
        return Chunk(rest, self.newlines - head.count(b"\n"), commas, quotes, crs, bare_cr)


def column_names(width: int) -> list[str]:
    return [f"c{i}" for i in range(width)]


def read_table(
    data: bytes, file: str, findings: Findings, mode: Mode, width_code: str = "row.width_mismatch", scope: str = "row"
) -> RawTable | None:
    """Check a whole file's text and return its rows, or None when the file as a whole is unreadable.

    `scope="file"` makes every broken line reject the upload (used for manifest.csv, where no row is optional).
    """
    reader = CsvReader(file, findings, mode, width_code, scope)
    body = reader.start(Chunk.of(data))
    if body is None:
        return None
    return reader.rows(body, last=True)


class CsvReader:
    """Reads one file's text: `start` with the first chunk (header), then `rows` for each chunk of lines.

    Chunks must hold whole lines (see `line_chunks`); row numbers run on across chunks.
    """

    def __init__(self, file: str, findings: Findings, mode: Mode, width_code: str = "row.width_mismatch",
                 scope: str = "row", redact: bool = False) -> None:  # fmt: skip
        self.file, self.findings, self.mode = file, findings, mode
        self.width_code, self.scope = width_code, scope
        self.redact = redact  # the file has a password column: a broken line shows only its first cell
        self.header: list[str] = []
        self.next_row = 2  # the header is row 1

    def start(self, chunk: Chunk) -> Chunk | None:
        """Check the file's opening bytes and read the header; return the rest of the chunk, or None."""
        file, findings = self.file, self.findings
        first = chunk.data
        if not first or first.isspace():
            findings.add("csv.empty_file", Severity.ERROR, f"{file} is empty: it needs at least a header row", file=file)
            return None
        if first.startswith(UTF16_BOMS) or first[:2].count(0) == 1:
            findings.add("csv.utf16", Severity.ERROR, f"{file} is UTF-16 text; save it as UTF-8", file=file)
            return None
        bom = len(UTF8_BOM) if first.startswith(UTF8_BOM) else 0  # the spec says: accept and ignore a BOM
        end = first.find(b"\n")
        header_bytes = first[bom : end if end >= 0 else len(first)].rstrip(b"\r")
        if b"\x00" in header_bytes:
            self._nul()
            return None
        header = _parse_header(header_bytes.decode("utf-8", errors="replace"), file, findings)
        if header is None:
            return None
        self.header = header
        return chunk.after(first[: end + 1] if end >= 0 else first)

    def rows(self, chunk: Chunk, last: bool) -> RawTable | None:
        """The well-formed rows of one chunk of data lines (None when the file turns out to be binary)."""
        body = chunk.data
        if b"\x00" in body:
            self._nul()
            return None
        first_row = self.next_row
        self.next_row += chunk.newlines + (0 if body.endswith(b"\n") or not body else 1)
        names = column_names(len(self.header))
        schema = {n: pl.String for n in names}
        fast = _parse_if_clean(chunk, names, schema, first_row)
        if fast is not None:
            return RawTable(self.header, fast, fast.height, 0, pl.Series("sourcedId", [], pl.String))
        return self._rows_line_by_line(body, names, schema, first_row, last)

    def _nul(self) -> None:
        self.findings.add("csv.nul_byte", Severity.ERROR, f"{self.file} holds NUL bytes: it is not CSV text",
                          file=self.file)  # fmt: skip

    def _rows_line_by_line(self, body: bytes, names: list[str], schema: dict, first_row: int, last: bool) -> RawTable:
        width, mode = len(names), self.mode
        lines, lossy = _split_lines(body)
        quotes = b'"' in body
        bare_cr = body.count(b"\r") != body.count(b"\r\n")
        flags = _line_flags(lines, width, lossy, quotes, bare_cr, first_row, last)
        shown = pl.col("line")
        if self.redact:
            shown = pl.col("line").str.extract(r'^("?[^",]*"?)', 1) + pl.lit(",… (rest not shown: holds a password)")
        flags = flags.with_columns(shown=shown)
        good = _report_line_problems(flags, self.file, width, self.findings, mode, self.width_code, self.scope)
        dropped_ids = (
            flags.filter(~pl.col("blank") & ~pl.col("_row").is_in(good["_row"].implode()))
            .select(pl.col("line").str.extract(r'^"?([^",]*)', 1))
            .to_series()
            .drop_nulls()
        )
        # Trailing blank lines are not rows; lenient mode skips blank lines between rows too.
        skipped = flags["trailing_blank"] | (flags["blank"] & (mode is Mode.LENIENT))
        data_rows = flags.height - int(skipped.sum())
        expected = good.height
        del flags
        rows = good["_row"]
        text = lines.gather(rows - first_row).str.join("\n").item().encode() if expected else b""
        del lines
        frame = _parse_body(text, names, schema, expected).with_columns(_row=rows)
        if frame.height != expected:  # pragma: no cover - a disagreement between line checks and the parser
            raise RuntimeError(f"{self.file}: parsed {frame.height} rows, expected {expected}")
        return RawTable(self.header, frame, data_rows, data_rows - expected, dropped_ids)


class LineTooLong(Exception):
    """A line of the file is longer than the limit; its row (header = 1) and the bytes seen of it so far."""

    def __init__(self, row: int, length: int) -> None:
        super().__init__(f"row {row} is longer than {length} bytes")
        self.row = row
        self.length = length


def line_chunks(blocks: Iterable[bytes], size: int = 16 << 20, max_line: int | None = None) -> Iterator[Chunk]:
    """Regroup blocks of bytes into chunks of about `size` that end at a line break.

    A chunk ends where the quotes so far balance, so a record that a quoted line break splits over several
    lines stays in one chunk and is reported once, where it starts.

    With `max_line`, a line longer than that raises LineTooLong as soon as it is seen, before it is held
    whole: one line is one record, and a single record of hundreds of MiB costs many times its size to check
    (a 256 MiB line took 5 GiB and a minute). Only lines that run across blocks are measured, which is exact
    when `max_line` is at least the largest block (zipread.CHUNK): a line inside one block is shorter.
    """
    pending: list[bytes] = []
    held = 0
    rows_before = 1  # the row (header = 1) that the first byte of `pending` belongs to
    run = 0  # bytes so far of the line being read
    for block in blocks:
        if max_line is not None:
            run, too_long = _measure_line(block, run, max_line)
            if too_long is not None:
                # Line breaks are counted only here, on the way out: the chunks count theirs anyway.
                raise LineTooLong(rows_before + sum(part.count(b"\n") for part in pending), too_long)
        pending.append(block)
        held += len(block)
        if held >= size:
            cut = _cut_in_last(pending)
            if cut is not None:
                # The cut falls in the last block: join once, up to it, instead of joining everything and
                # then copying the chunk out of the joined bytes (two transient copies of a chunk per file).
                last = pending[-1]
                rest = last[cut:]
                chunk = Chunk.of(b"".join([*pending[:-1], last if cut == len(last) else last[:cut]]))
                rows_before += chunk.newlines
                yield chunk
                pending, held = [rest], len(rest)
                continue
            data = b"".join(pending)
            cut = _cut_point(data)
            if cut:
                chunk = Chunk.of(data if cut == len(data) else data[:cut])
                rows_before += chunk.newlines
                yield chunk
                pending, held = [data[cut:]], len(data) - cut
            else:
                pending = [data]
    yield Chunk.of(b"".join(pending))


def _measure_line(block: bytes, run: int, limit: int) -> tuple[int, int | None]:
    """The length so far of the line being read after `block`, given it before; and, when the line is
    longer than `limit`, its length as far as it was seen (else None)."""
    first = block.find(b"\n")
    if first < 0:
        return run + len(block), (run + len(block) if run + len(block) > limit else None)
    if run + first > limit:
        return run + first, run + first
    return len(block) - block.rfind(b"\n") - 1, None


def _cut_in_last(blocks: list[bytes], tries: int = 64) -> int | None:
    """Where `_cut_point` would cut the joined `blocks`, as an offset into the last block; None when that
    cut is not in the last block or finding it needs bytes before it (then join and use `_cut_point`)."""
    last = blocks[-1]
    end = last.rfind(b"\n")
    if end < 0:
        return None
    before = [part.count(b'"') for part in blocks[:-1]] if any(b'"' in part for part in blocks[:-1]) else []
    if not before and b'"' not in last:
        return end + 1
    quotes = sum(before) + last.count(b'"', 0, end)
    for _ in range(tries):
        if quotes % 2 == 0:
            return end + 1
        start = last.rfind(b"\n", 0, end)
        if start < 0:
            return None
        quotes -= last.count(b'"', start, end)
        end = start
    return last.rfind(b"\n") + 1


def _cut_point(buf: bytes, tries: int = 64) -> int:
    """After the last line break outside quotes (within `tries` lines of the end); 0 when there is none."""
    end = buf.rfind(b"\n")
    if end < 0:
        return 0
    if b'"' not in buf:  # most files hold no quote at all: spare them the count
        return end + 1
    quotes = buf.count(b'"', 0, end)
    for _ in range(tries):
        if quotes % 2 == 0:
            return end + 1
        start = buf.rfind(b"\n", 0, end)
        if start < 0:
            break
        quotes -= buf.count(b'"', start, end)
        end = start
    # A stray quote unbalances everything after it; the line checks report it wherever the cut falls.
    return buf.rfind(b"\n") + 1


def _parse_if_clean(chunk: Chunk, names: list[str], schema: dict, first_row: int) -> pl.DataFrame | None:
    """Parse straight from the bytes when that provably gives one well-formed record per line, else None.

    polars' strict parse already fails on invalid UTF-8, stray quotes and rows with too many cells. If it
    also yields one record per physical line (no quoted line breaks) and the separators outside quotes add
    up to exactly (width - 1) per record, no row can be short, so no line needs looking at on its own.
    """
    body = chunk.data
    if not body:
        return pl.DataFrame(schema=schema).with_columns(_row=pl.lit(0, pl.UInt32))
    if chunk.bare_cr:
        return None
    try:
        frame = pl.read_csv(body, **_csv_options(names, schema))
    except pl.exceptions.PolarsError:
        return None
    lines = chunk.newlines + (0 if body.endswith(b"\n") else 1)
    if frame.height != lines:
        return None
    if chunk.quotes:
        # polars reads a stray quote inside an unquoted field as text. Such a value holds a quote, and so does
        # a correctly escaped one (""): the raw lines of rows whose values hold a quote are checked for form.
        # Row i is line i here (the counts matched above).
        # A comma inside a value was inside quotes: it is not a separator. One parallel pass gives both.
        lazy = frame.lazy()
        suspect, commas = pl.collect_all([
            lazy.select(pl.any_horizontal(pl.col(n).str.contains('"', literal=True) for n in names).fill_null(False)),
            lazy.select(pl.sum_horizontal(pl.col(n).str.count_matches(",", literal=True).sum() for n in names)),
        ])  # fmt: skip
        suspect = suspect.to_series()
        if suspect.any():
            lines = _split_lines(body)[0].gather(suspect.arg_true())
            if lines.str.replace_all(FIELD_START_QUOTED, "$1").str.contains('"', literal=True).any():
                return None
        separators = chunk.commas - (commas.item() or 0)
    else:
        # Without quotes every byte is a value's, a separator, a line break or the CR before one; a value's
        # length is kept beside it, so summing lengths reads no text.
        values = frame.select(pl.sum_horizontal(pl.col(n).str.len_bytes().sum() for n in names)).item() or 0
        separators = len(body) - chunk.newlines - chunk.crs - values
    if separators != (len(names) - 1) * frame.height:
        return None
    return frame.with_columns(_row=pl.int_range(first_row, first_row + frame.height, dtype=pl.UInt32))


def _split_lines(data: bytes) -> tuple[pl.Series, bool]:
    """All physical lines as one string column; CRLF and LF both end a line. Lossy when not UTF-8."""
    sep = next((s for s in _SPARE_SEPARATORS if s.encode() not in data), None)
    if sep is None:  # pragma: no cover - a file holding every spare control byte
        text = data.decode("utf-8", errors="replace")
        return pl.Series("line", text.replace("\r\n", "\n").split("\n")), REPLACEMENT_CHAR in text
    opts = dict(has_header=False, separator=sep, quote_char=None, new_columns=["line"], schema={"line": pl.String})
    try:
        frame = pl.read_csv(data, **opts)
        lossy = False
    except pl.exceptions.ComputeError:
        frame = pl.read_csv(data, encoding="utf8-lossy", **opts)
        lossy = True
    return frame["line"].fill_null(""), lossy


def _parse_header(line: str, file: str, findings: Findings) -> list[str] | None:
    problem = None
    if "\r" in line:
        problem = ("csv.bare_carriage_return", "the header row holds a carriage return that does not end a line")
    elif REPLACEMENT_CHAR in line:
        problem = ("csv.invalid_utf8", "the header row is not valid UTF-8 text")
    elif not pl.Series([line]).str.contains(WELL_FORMED).item():
        problem = ("csv.unescaped_quote", "the header row has a stray double quote")
    if problem:
        findings.add(problem[0], Severity.ERROR, f"{file}: {problem[1]}", file=file, row=1, value=line, scope="file")
        return None
    return split_cells(line)


def split_cells(line: str) -> list[str]:
    """The cells of one CSV line, read as the csv module reads them, but with no limit on a cell's length.

    The csv module raises on a cell over 128 KiB, and a header line is the one line read before any size is
    known: a file of one 200 KB line without a line break is a 1 KB upload. Never raises; an unclosed
    quoted cell runs to the end of the line.
    """
    if not line:
        return []
    cells, at, end = [], 0, len(line)
    while True:
        cell = []
        if line.startswith('"', at):
            at += 1
            while (close := line.find('"', at)) >= 0 and line.startswith('"', close + 1):
                cell.append(line[at : close + 1])  # up to and with the first quote of a doubled pair
                at = close + 2
            if close < 0:
                close = end
            cell.append(line[at:close])
            at = min(close + 1, end)
        comma = line.find(",", at)
        cell.append(line[at : end if comma < 0 else comma])
        cells.append("".join(cell))
        if comma < 0:
            return cells
        at = comma + 1


def _line_flags(
    body: pl.Series, width: int, lossy: bool, quotes: bool, bare_cr: bool, first_row: int, last: bool
) -> pl.DataFrame:
    """One row per data line with what is wrong with it; row numbers start at 2 (header is 1).

    Quote analysis (regexes) runs only on the lines that hold a quote; most lines of most exports hold none.
    """
    n = body.len()
    false = pl.Series([False], dtype=pl.Boolean).extend_constant(False, n - 1) if n else pl.Series([], dtype=pl.Boolean)
    cells = (body.str.count_matches(",", literal=True) + 1).cast(pl.UInt32)
    odd_quotes, malformed, opens_quote = false.clone(), false.clone(), false.clone()
    if quotes:
        idx = body.str.contains('"', literal=True).arg_true()
        if idx.len():
            sub = body.gather(idx)
            odd_quotes.scatter(idx, (sub.str.count_matches('"', literal=True) % 2) == 1)
            malformed.scatter(idx, ~sub.str.contains(WELL_FORMED))
            opens_quote.scatter(idx, sub.str.contains(OPEN_QUOTE_AT_END))
            bare = sub.str.replace_all(QUOTED_FIELD, "")
            cells.scatter(idx, (bare.str.count_matches(",", literal=True) + 1).cast(pl.UInt32))
    frame = pl.DataFrame({
        "line": body,
        "_row": pl.int_range(first_row, first_row + n, dtype=pl.UInt32, eager=True),
        "blank": body.str.len_bytes() == 0,
        "cr": body.str.contains("\r", literal=True) if bare_cr else false,
        "bad_utf8": body.str.contains(REPLACEMENT_CHAR, literal=True) if lossy else false,
        "odd_quotes": odd_quotes,
        "malformed": malformed,
        "opens_quote": opens_quote,
        "cells": cells,
    })  # fmt: skip
    # Blank lines at the very end of a file are a harmless export habit.
    if not last:
        return frame.with_columns(trailing_blank=pl.lit(False))
    last_content = frame.filter(~pl.col("blank"))["_row"].max()
    last_content = first_row - 1 if last_content is None else last_content
    return frame.with_columns(trailing_blank=pl.col("blank") & (pl.col("_row") > last_content))


def _report_line_problems(
    flags: pl.DataFrame, file: str, width: int, findings: Findings, mode: Mode, width_code: str, scope: str
) -> pl.DataFrame:
    """Turn line flags into findings; return the rows (`_row`) that go on to parsing."""
    flags = flags.filter(~pl.col("trailing_blank"))
    broken = _broken_records(flags)
    checks: list[tuple[str, pl.Expr, str, Severity]] = [
        ("csv.blank_line", pl.col("blank"), "blank line between data rows", mode.deviation()),
        ("csv.invalid_utf8", pl.col("bad_utf8"), "the row is not valid UTF-8 (saved as Latin-1 or Windows-1252?)",
         Severity.ERROR),
        ("csv.bare_carriage_return", pl.col("cr"), "a carriage return inside the row", Severity.ERROR),
    ]  # fmt: skip
    dropped = pl.lit(False)
    for code, cond, message, severity in checks:
        rows = flags.filter(cond & ~pl.col("_row").is_in(broken["_row"].implode()))
        findings.add_rows(code, severity, rows.select("_row", value="shown"), message, file=file, scope=scope)
        dropped = dropped | cond
    starts = broken.filter(pl.col("start")).join(flags.select("_row", "shown"), on="_row")
    findings.add_rows(
        "csv.line_break_in_quoted_field",
        Severity.ERROR,
        starts.select("_row", "end", value="shown"),
        lambda r: f"a quoted field opened on row {r['_row']} runs over a line break (rows {r['_row']}-{r['end']})"
        if r["end"] > r["_row"] else f"a quoted field opened on row {r['_row']} is never closed",
        file=file,
        scope=scope,
    )
    stray = flags.filter(pl.col("malformed") & ~pl.col("_row").is_in(broken["_row"].implode()))
    findings.add_rows(
        "csv.unescaped_quote",
        Severity.ERROR,
        stray.select("_row", value="shown"),
        "a double quote inside a field must be doubled (\"\") and the field quoted",
        file=file,
        scope=scope,
    )
    structural = dropped | pl.col("malformed") | pl.col("_row").is_in(broken["_row"].implode())
    wrong_width = flags.filter(~structural & (pl.col("cells") != width))
    findings.add_rows(
        width_code,
        Severity.ERROR,
        wrong_width.select("_row", "cells", value="shown"),
        lambda r: f"the row has {r['cells']} cells, the header has {width} (an unquoted comma?)",
        file=file,
        scope=scope,
    )
    return flags.filter(~structural & (pl.col("cells") == width)).select("_row")


def _broken_records(flags: pl.DataFrame) -> pl.DataFrame:
    """Lines that belong to a record broken by a line break inside a quoted field.

    A record starts on a line that ends inside an opened quote and runs to the next line with an odd number
    of quotes (the one that closes it). Only lines with odd quote counts are walked, so this is cheap.
    """
    odd = flags.filter(pl.col("odd_quotes")).select("_row", "opens_quote")
    spans: list[tuple[int, int]] = []
    pending: int | None = None
    for row, opens in odd.iter_rows():
        if pending is not None:
            spans.append((pending, row))
            pending = None
        elif opens:
            pending = row
    if pending is not None:
        spans.append((pending, int(flags["_row"].max())))
    if not spans:
        return pl.DataFrame(schema={"_row": pl.UInt32, "start": pl.Boolean, "end": pl.UInt32})
    ranges = pl.DataFrame({"first": [s for s, _ in spans], "end": [e for _, e in spans]}, schema=[
        ("first", pl.UInt32), ("end", pl.UInt32)])  # fmt: skip
    return (
        ranges.with_columns(_row=pl.int_ranges("first", pl.col("end") + 1, dtype=pl.UInt32))
        .explode("_row")
        .select("_row", start=pl.col("_row") == pl.col("first"), end="end")
    )


def _parse_body(body: bytes, names: list[str], schema: dict, expected: int) -> pl.DataFrame:
    if expected == 0:
        return pl.DataFrame(schema=schema)
    return pl.read_csv(body, **_csv_options(names, schema))


def _csv_options(names: list[str], schema: dict) -> dict:
    # A quoted empty field ("") is as blank as an empty one: exports that quote every field write blanks so.
    return dict(has_header=False, new_columns=names, schema=schema, quote_char='"', null_values=[""])
