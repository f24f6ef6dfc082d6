"""Write the sample packages next to this file: valid ones, a lenient-mode Excel export, and broken ones that
each show one problem (see README.md). Every run writes the same bytes.

    python samples/make_samples.py [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # runnable from a checkout whether or not the package is installed

from daemon.generator import generate as gen  # noqa: E402

SMALL = {"schools": 2, "students_per_school": 20, "teachers_per_school": 3, "enrollments_per_student": 4}
MiB = 1 << 20
Tables = dict[str, pl.DataFrame]
Entries = dict[str, bytes]


def district(version: str = "1.1") -> Tables:
    return gen.generate(gen.DistrictSpec(**SMALL, version=version))


def entries(tables: Tables, version: str = "1.1", mode: str = "bulk") -> Entries:
    return gen.package_entries(tables, version, mode)


def edited(tables: Tables, entity: str, rows: tuple[int, ...] = (0,), **values: str) -> Tables:
    """A copy of `tables` with the given cells of some rows (0-based) of one table replaced."""
    at_row = pl.int_range(pl.len()).is_in(rows)
    frame = tables[entity].with_columns(
        pl.when(at_row).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
        for column, value in values.items()
    )
    return {**tables, entity: frame}


def with_raw_bytes(tables: Tables, entity: str, column: str, raw: bytes) -> Entries:
    """Entries whose `entity` file holds `raw` as the first row's `column`, written without CSV quoting."""
    marker = "MARKER-FOR-RAW-BYTES"
    files = entries(edited(tables, entity, **{column: marker}))
    files[f"{entity}.csv"] = files[f"{entity}.csv"].replace(marker.encode(), raw)
    return files


def without(files: Entries, name: str) -> Entries:
    return {n: data for n, data in files.items() if n != name}


# --- the packages ---------------------------------------------------------------------------------------


def valid_delta() -> Entries:
    return entries(gen.delta_tables(district(), "1.1", seed=1), mode="delta")


def lenient_excel_export() -> Entries:
    """What a spreadsheet round trip and a zipped folder leave behind: lenient mode accepts it with warnings."""
    tables = district()
    tables["orgs"] = tables["orgs"].rename({"sourcedId": "SourcedId"})
    tables["enrollments"] = tables["enrollments"].with_columns(pl.col("primary").str.to_uppercase())
    tables = edited(tables, "courses", (0, 1, 2), status="active", dateLastModified="2026-01-05T07:00:00.000Z")
    files = entries(tables)
    files["users.csv"] = b"\xef\xbb\xbf" + files["users.csv"].replace(b"\n", b"\r\n")
    return {f"export/{name}": data for name, data in files.items()}


def oneroster_1_0() -> Entries:
    """1.1 data under the 1.0 headers (shared/reference/oneroster_csv.md section 9.3), without a manifest."""
    t = district()
    enrollment_order = ("sourcedId", "classSourcedId", "schoolSourcedId", "userSourcedId", "role", "status",
                        "dateLastModified", "primary")  # fmt: skip
    old = {
        "orgs": t["orgs"],
        "academicSessions": t["academicSessions"].drop("schoolYear"),
        "courses": t["courses"].drop("subjectCodes").rename({"schoolYearSourcedId": "schoolYearId", "grades": "grade"}),
        "classes": t["classes"].drop("subjectCodes", "periods").rename(
            {"grades": "grade", "termSourcedIds": "termSourcedId"}
        ),
        "users": t["users"].drop("enabledUser", "middleName", "grades", "password").rename(
            {"userIds": "userId", "agentSourcedIds": "agents"}
        ),
        "enrollments": t["enrollments"].select(enrollment_order),
        "demographics": t["demographics"].rename({"sourcedId": "userSourcedId", "birthDate": "birthdate"}),
    }
    return without(entries(old), "manifest.csv")


def us_dates() -> Entries:
    tables = district()
    us = pl.col("startDate", "endDate").str.replace(r"^(\d{4})-0?(\d+)-0?(\d+)$", "${2}/${3}/${1}")
    return entries({**tables, "academicSessions": tables["academicSessions"].with_columns(us)})


def duplicate_sourced_id() -> Entries:
    tables = district()
    users = tables["users"]
    twin = users.head(1).with_columns(givenName=pl.lit("Samantha"))
    return entries({**tables, "users": pl.concat([users, twin])})


def delta_missing_status() -> Entries:
    tables = gen.delta_tables(district(), "1.1", seed=1)
    tables["users"] = tables["users"].with_columns(status=pl.lit(""))
    return entries(tables, mode="delta")


def zip_slip() -> Entries:
    return {**entries(district()), "../../etc/evil.csv": b"sourcedId\nevil\n"}


def zip_bomb() -> Entries:
    return {**entries(district()), "users.csv": bytes(60 * MiB)}


def zipped(build: Callable[[], Entries]) -> Callable[[], bytes]:
    return lambda: gen.zip_bytes(build())


SAMPLES: dict[str, Callable[[], bytes]] = {
    "valid-1.1-bulk.zip": zipped(lambda: entries(district())),
    "valid-1.2-bulk.zip": zipped(lambda: entries(district("1.2"), "1.2")),
    "valid-1.1-delta.zip": zipped(valid_delta),
    "lenient-excel-export.zip": zipped(lenient_excel_export),
    "broken-oneroster-1.0.zip": zipped(oneroster_1_0),
    "broken-missing-manifest.zip": zipped(lambda: without(entries(district()), "manifest.csv")),
    "broken-manifest-file-missing.zip": zipped(lambda: without(entries(district()), "classes.csv")),
    "broken-reference-missing-class.zip": zipped(
        lambda: entries(edited(district(), "enrollments", (5,), classSourcedId="cls-0009-t009-p9"))
    ),
    "broken-school-not-a-school.zip": zipped(
        lambda: entries(edited(district(), "classes", schoolSourcedId=gen.DISTRICT))
    ),
    "broken-invalid-enum.zip": zipped(lambda: entries(edited(district(), "classes", classType="lab"))),
    "broken-duplicate-sourcedid.zip": zipped(duplicate_sourced_id),
    "broken-row-width.zip": zipped(lambda: with_raw_bytes(district(), "users", "familyName", b"Doe, John")),
    "broken-invalid-utf8.zip": zipped(lambda: with_raw_bytes(district(), "users", "givenName", b"Ren\xe9e")),
    "broken-line-break-in-field.zip": zipped(
        lambda: entries(edited(district(), "users", givenName="Anne\nMarie"))
    ),
    "broken-us-dates.zip": zipped(us_dates),
    "broken-zip-slip.zip": zipped(zip_slip),
    "broken-zip-bomb.zip": zipped(zip_bomb),
    "broken-not-a-zip.zip": lambda: gen.to_csv_bytes(district()["orgs"]),  # a CSV uploaded under a .zip name
    "broken-truncated.zip": lambda: (whole := gen.zip_bytes(entries(district())))[: len(whole) // 2],
    "broken-delta-missing-status.zip": zipped(delta_missing_status),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the OneRoster sample packages (same bytes every run).")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: this folder)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, build in SAMPLES.items():
        (args.out / name).write_bytes(build())
    print(f"wrote {len(SAMPLES)} samples to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
