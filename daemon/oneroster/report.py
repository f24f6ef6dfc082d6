"""Render a ValidationResult for people: verdict, counts per file, findings grouped by code."""

from __future__ import annotations

import json
from collections import defaultdict

from .codes import CODES
from .findings import Finding
from .validate import ValidationResult

EXAMPLES_PER_CODE = 5


def render_json(result: ValidationResult) -> str:
    return json.dumps(result.to_dict(), indent=2, ensure_ascii=False)


def render_text(result: ValidationResult, source: str) -> str:
    f = result.findings
    lines = [
        f"{source}: {result.verdict.upper()}",
        f"  OneRoster {result.version or 'unknown'}, {result.mode} mode; "
        f"{f.errors} error(s), {f.warnings} warning(s)",
    ]
    if result.files:
        lines.append("")
        lines.append(f"  {'file':<34}{'mode':<7}{'rows':>10}{'dropped':>10}")
        for name, s in result.files.items():
            lines.append(f"  {name:<34}{s.mode:<7}{s.rows:>10}{s.dropped:>10}")
    groups: dict[str, list[Finding]] = defaultdict(list)
    for finding in f.sorted():
        groups[finding.code].append(finding)
    for code in sorted(groups, key=lambda c: (groups[c][0].severity != "error", c)):
        examples = groups[code]
        lines.append("")
        lines.append(f"  {examples[0].severity.upper():<8}{code} ({f.counts[code]}): {CODES.get(code, '')}")
        for ex in examples[:EXAMPLES_PER_CODE]:
            lines.append(f"    {_place(ex)}  {ex.message}")
        if f.counts[code] > EXAMPLES_PER_CODE:
            lines.append(f"    … and {f.counts[code] - EXAMPLES_PER_CODE} more")
    return "\n".join(lines) + "\n"


def _place(f: Finding) -> str:
    where = f.file or "(package)"
    if f.row is not None:
        where += f":{f.row}"
    if f.column:
        where += f" {f.column}"
    if f.value is not None:
        where += f" = {f.value!r}"
    return where
