"""Render a ValidationResult for people: verdict, counts per file, findings grouped by code and severity.

One group holds the findings of one code at one severity: a code can be an error on one column and a
warning on another (a required reference against an optional one), and each group is labelled with its
own severity and count. The summary line's error and warning counts are the sums of the groups shown.

Groups are listed causes first, so that a reader fixes the first group and watches the later ones shrink:

1. by family, in the order of `FAMILIES`: the zip, the manifest, the package as a whole, the text of a
   file, its header, its rows, its references, then the consequences of all these (a row dropped because
   a row it points at was dropped: `CONSEQUENCES`), then what sums up a file (too many dropped rows);
   a code of a family not named there comes last;
2. within a family, errors before warnings;
3. then in the order of the catalogue (`codes.py`), which lists the more fundamental problem first.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

from daemon.oneroster.codes import CODES
from daemon.oneroster.findings import Finding, Findings, Severity
from daemon.oneroster.validate import ValidationResult

EXAMPLES_PER_CODE = 5

# The family of a code is the part before its dot, except for the codes in CONSEQUENCES.
FAMILIES = ("zip", "manifest", "package", "snapshot", "csv", "header", "row", "reference", "consequence", "file")
CONSEQUENCES = frozenset({"reference.target_dropped"})

_CATALOGUE = {code: position for position, code in enumerate(CODES)}


@dataclass
class Group:
    code: str
    severity: str  # "error" or "warning"
    count: int
    examples: list[Finding] = field(default_factory=list)


def render_json(result: ValidationResult) -> str:
    return json.dumps(result.to_dict(), indent=2, ensure_ascii=False)


def render_text(result: ValidationResult, source: str) -> str:
    groups = group_findings(result.findings)
    errors = sum(g.count for g in groups if g.severity == Severity.ERROR)
    warnings = sum(g.count for g in groups if g.severity == Severity.WARNING)
    lines = [
        f"{source}: {result.verdict.upper()}",
        f"  OneRoster {result.version or 'unknown'}, {result.mode} mode; {errors} error(s), {warnings} warning(s)",
    ]
    if result.files:
        lines.append("")
        lines.append(f"  {'file':<34}{'mode':<7}{'rows':>10}{'dropped':>10}")
        for name, s in result.files.items():
            lines.append(f"  {name:<34}{s.mode:<7}{s.rows:>10}{s.dropped:>10}")
    for group in groups:
        lines.append("")
        lines.append(f"  {group.severity.upper():<8}{group.code} ({group.count}): {CODES.get(group.code, '')}")
        for ex in group.examples[:EXAMPLES_PER_CODE]:
            lines.append(f"    {_place(ex)}  {ex.message}")
        shown = min(len(group.examples), EXAMPLES_PER_CODE)
        if group.count > shown:
            lines.append(f"    … and {group.count - shown} more")
    return "\n".join(lines) + "\n"


def group_findings(findings: Findings) -> list[Group]:
    """One group per (code, severity) with its complete count and kept examples, causes first."""
    examples: dict[tuple[str, str], list[Finding]] = defaultdict(list)
    for finding in findings.sorted():
        examples[(finding.code, str(finding.severity))].append(finding)
    groups = [Group(code, str(severity), n, examples.get((code, str(severity)), []))
              for (code, severity), n in findings.counts_by_severity.items() if n]  # fmt: skip
    return sorted(groups, key=_order)


def family(code: str) -> str:
    return "consequence" if code in CONSEQUENCES else code.partition(".")[0]


def _order(group: Group) -> tuple:
    name = family(group.code)
    rank = FAMILIES.index(name) if name in FAMILIES else len(FAMILIES)
    severity = {Severity.ERROR: 0, Severity.WARNING: 1}.get(group.severity, 2)
    return rank, severity, _CATALOGUE.get(group.code, len(_CATALOGUE)), group.code


def _place(f: Finding) -> str:
    where = f.file or "(package)"
    if f.row is not None:
        where += f":{f.row}"
    if f.column:
        where += f" {f.column}"
    if f.value is not None:
        where += f" = {f.value!r}"
    return where
