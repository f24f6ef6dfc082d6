"""Header rows: map a file's header cells onto the version's defined columns.

Header problems are file-level findings (they reject the upload), but rows are still checked for every
column that could be found by name, so one round of feedback covers as much as possible.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from daemon.oneroster.findings import Findings, Mode, Severity
from daemon.oneroster.schema import Table


@dataclass(slots=True)
class HeaderMap:
    positions: dict[str, int]  # defined column name -> cell position in the file
    extensions: dict[str, int] = field(default_factory=dict)  # metadata.* and other kept extension columns
    usable: bool = True


def map_header(header: list[str], table: Table, findings: Findings, mode: Mode) -> HeaderMap:
    file = table.file
    defined = set(table.names)
    by_lower = {name.lower(): name for name in table.names}

    def report(code: str, severity: Severity, message: str, value: str | None = None) -> None:
        findings.add(code, severity, f"{file}: {message}", file=file, row=1, column=value, value=value,
                     scope="file")  # fmt: skip

    counts = Counter(header)
    positions: dict[str, int] = {}
    extensions: dict[str, int] = {}
    for pos, cell in enumerate(header):
        if cell == "":
            report("header.empty_column_name", Severity.ERROR, f"header cell {pos + 1} is empty")
            continue
        if counts[cell] > 1 and cell in positions.keys() | extensions.keys():
            report("header.duplicate_column", Severity.ERROR, f"column '{cell}' appears more than once", cell)
            continue
        if cell in defined:
            positions[cell] = pos
        elif cell.lower() in by_lower and by_lower[cell.lower()] not in positions and by_lower[cell.lower()] not in counts:
            name = by_lower[cell.lower()]
            report("header.column_case", mode.deviation(), f"column '{cell}' should be spelled '{name}'", cell)
            positions[name] = pos
        elif cell in table.legacy:
            report("header.legacy_column", mode.deviation(),
                   f"column '{cell}' belongs to an earlier revision of the format{mode.tolerated('ignored')}",
                   cell)  # fmt: skip
        else:
            extensions[cell] = pos

    missing = [name for name in table.names if name not in positions]
    for name in missing:
        findings.add("header.missing_column", Severity.ERROR, f"{file}: column '{name}' is missing", file=file, row=1,
                     column=name, scope="file")  # fmt: skip
    found_order = sorted(positions, key=positions.__getitem__)
    expected_order = [name for name in table.names if name in positions]
    if found_order != expected_order:
        findings.add("header.column_order", Severity.ERROR, f"{file}: columns are out of order; expected "
                     f"{','.join(table.names)}", file=file, row=1, value=",".join(header), scope="file")  # fmt: skip
    # Extension columns go after the defined ones, which keep their places for readers that go by position:
    # one among them is an error in both modes. A trailing one not named metadata.* is a deviation.
    last_defined = max(positions.values(), default=-1)
    for name, pos in extensions.items():
        among = pos < last_defined
        if name.startswith("metadata."):
            if among:
                report("header.metadata_position", Severity.ERROR,
                       f"extension column '{name}' must come after all defined columns", name)  # fmt: skip
        elif among:
            report("header.unknown_column", Severity.ERROR,
                   f"column '{name}' is not defined and stands among the defined columns (misspelt?); extension "
                   "columns come after them, named 'metadata.<name>'", name)  # fmt: skip
        else:
            report("header.unknown_column", mode.deviation(),
                   f"column '{name}' is not defined; name extension columns 'metadata.<name>'"
                   f"{mode.tolerated('kept as an extension')}", name)  # fmt: skip

    usable = "sourcedId" in positions and len(positions) * 2 >= len(table.names)
    if not usable:
        joined = ",".join(header)
        hint = next((f" (it looks {name}-separated: OneRoster files are comma-separated)"
                     for sep, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")) if sep in joined), "")  # fmt: skip
        report("header.unusable", Severity.ERROR,
               f"the header matches too little of {file} to check its rows{hint}; expected {','.join(table.names)}")  # fmt: skip
    return HeaderMap(positions, extensions, usable)
