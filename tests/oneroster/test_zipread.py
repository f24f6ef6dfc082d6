"""zipread: every rule has a zip that triggers it and one that does not. All zips are built in tmp_path."""

from __future__ import annotations

import random
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.oneroster import zipread
from daemon.oneroster.findings import Finding, Findings, Mode, Severity
from daemon.oneroster.schema import MANIFEST_FILE, V11, V12
from daemon.oneroster.zipread import EntryError, Package, ZipLimits, open_package

KNOWN = frozenset({*V11.files, *V12.files, MANIFEST_FILE})
CSV = b"sourcedId,status,dateLastModified\nu1,,\n"
MIB = 1024 * 1024
DEVIATION = [(Mode.LENIENT, Severity.WARNING), (Mode.STRICT, Severity.ERROR)]  # a deviation's severity per mode

# A file to put in a zip: a name (or a prepared ZipInfo), its bytes, and optionally a change to make to
# its directory record after the data is written (how a zip that lies about itself is made).
Change = Callable[[zipfile.ZipInfo], None]
Spec = tuple[str | zipfile.ZipInfo, bytes] | tuple[str | zipfile.ZipInfo, bytes, Change]


def build(path: Path, files: list[Spec], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate names we want
        with zipfile.ZipFile(path, "w", compression) as zf:
            for name, data, *tweak in files:
                zf.writestr(name, data)
                for change in tweak:
                    change(zf.filelist[-1])
    return path


def run(path: Path, mode: Mode = Mode.LENIENT, limits: ZipLimits = ZipLimits()) -> tuple[Package, Findings]:
    findings = Findings()
    return open_package(path, findings, mode, KNOWN, limits), findings


def zip_of(tmp_path: Path, *names: str, **kw) -> tuple[Package, Findings]:
    return run(build(tmp_path / "up.zip", [(n, b"" if n.endswith("/") else CSV) for n in names]), **kw)


def codes(findings: Findings) -> list[str]:
    return [f.code for f in findings.items]


def only(findings: Findings, code: str) -> Finding:
    found = [f for f in findings.items if f.code == code]
    assert len(found) == 1, findings.items
    return found[0]


def set_attr(**values: object) -> Change:
    def change(info: zipfile.ZipInfo) -> None:
        for key, value in values.items():
            setattr(info, key, value)

    return change


# --- reading ----------------------------------------------------------------------------------------------


def test_root_files_are_used_and_read_exactly(tmp_path):
    package, findings = zip_of(tmp_path, "manifest.csv", "users.csv")
    with package:
        assert findings.items == []
        assert not package.fatal
        assert sorted(package.entries) == ["manifest.csv", "users.csv"]
        entry = package.entries["users.csv"]
        assert (entry.name, entry.zip_name, entry.size) == ("users.csv", "users.csv", len(CSV))
        assert package.read("users.csv") == CSV


@pytest.mark.parametrize(
    "method",
    [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA],
    ids=["stored", "deflated", "bzip2", "lzma"],
)
def test_every_supported_method_reads_back_over_many_chunks(tmp_path, method):
    data = random.Random(1).randbytes(MIB + 17)
    with run(build(tmp_path / "up.zip", [("users.csv", data)], method))[0] as package:
        assert package.read("users.csv") == data


def test_reading_a_name_that_was_not_chosen_is_a_key_error(tmp_path):
    package, _ = zip_of(tmp_path, "users.csv")
    with package, pytest.raises(KeyError):
        package.read("orgs.csv")


def test_close_releases_the_archive(tmp_path):
    package, _ = zip_of(tmp_path, "users.csv")
    with package:
        pass
    with pytest.raises(ValueError):
        package.read("users.csv")


def corrupt_read(path: Path) -> EntryError:
    package, findings = run(path)
    assert "users.csv" in package.entries and findings.items == []
    with package, pytest.raises(EntryError) as caught:
        package.read("users.csv")
    return caught.value


def test_damaged_compressed_data_raises_corrupt_entry(tmp_path):
    text = b"".join(b"u%d,,,student,user%d\n" % (i, i) for i in range(5000))
    path = build(tmp_path / "up.zip", [("users.csv", text)])
    raw = bytearray(path.read_bytes())
    start = 30 + len("users.csv")  # the first local header is at offset 0
    for at in range(start + 200, start + 260):
        raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    finding = corrupt_read(path).finding
    assert (finding.code, finding.severity, finding.file, finding.value) == (
        "zip.corrupt_entry", Severity.ERROR, "users.csv", "users.csv",
    )  # fmt: skip
    assert "users.csv" in finding.message


@pytest.mark.parametrize("declared", [len(CSV) - 5, len(CSV) + 5], ids=["under", "over"])
def test_an_entry_whose_size_is_declared_wrongly_raises_corrupt_entry(tmp_path, declared):
    # Stored, so only the declared size is wrong; zipfile itself notices only the first case (by CRC).
    path = build(tmp_path / "up.zip", [("users.csv", CSV, set_attr(file_size=declared))], zipfile.ZIP_STORED)
    assert corrupt_read(path).finding.code == "zip.corrupt_entry"


# --- the container ----------------------------------------------------------------------------------------


def test_an_empty_file_is_fatal(tmp_path):
    path = tmp_path / "up.zip"
    path.write_bytes(b"")
    package, findings = run(path)
    assert package.fatal and package.entries == {}
    assert codes(findings) == ["zip.empty_file"] and findings.errors == 1


def test_an_empty_archive_is_not_an_empty_file(tmp_path):
    package, findings = zip_of(tmp_path)
    assert not package.fatal and package.entries == {} and findings.items == []


@pytest.mark.parametrize(
    "content",
    [random.Random(2).randbytes(4096), b"PK but not really a zip", b"sourcedId,status\n"],
    ids=["random", "pk-text", "csv"],
)
def test_a_file_without_a_zip_signature_is_not_a_zip(tmp_path, content):
    path = tmp_path / "up.zip"
    path.write_bytes(content)
    package, findings = run(path)
    assert package.fatal and codes(findings) == ["zip.not_a_zip"]


def test_a_zip_behind_other_bytes_is_not_a_zip(tmp_path):
    real = build(tmp_path / "real.zip", [("users.csv", CSV)]).read_bytes()
    path = tmp_path / "up.zip"
    path.write_bytes(b"MZ" + bytes(100) + real)  # zipfile itself would open this
    assert codes(run(path)[1]) == ["zip.not_a_zip"]


def test_a_zip_cut_in_half_is_truncated(tmp_path):
    path = build(tmp_path / "up.zip", [("users.csv", CSV), ("orgs.csv", CSV)])
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    package, findings = run(path)
    assert package.fatal and codes(findings) == ["zip.truncated"]


def test_more_entries_than_the_limit_is_fatal_without_parsing_the_directory(tmp_path, monkeypatch):
    path = build(tmp_path / "up.zip", [(f"f{i}.csv", b"") for i in range(4)])
    monkeypatch.setattr(zipread.zipfile, "ZipFile", None)  # the count must come from the end record alone
    package, findings = run(path, limits=ZipLimits(max_entries=3))
    assert package.fatal and codes(findings) == ["zip.too_many_entries"]


def test_entries_at_the_limit_are_accepted(tmp_path):
    path = build(tmp_path / "up.zip", [(f"f{i}.csv", b"") for i in range(3)])
    package, findings = run(path, limits=ZipLimits(max_entries=3))
    assert not package.fatal and "zip.too_many_entries" not in codes(findings)


def test_an_end_record_that_understates_the_count_is_still_caught(tmp_path):
    path = build(tmp_path / "up.zip", [(f"f{i}.csv", b"") for i in range(4)])
    raw = bytearray(path.read_bytes())
    end = raw.rfind(zipread.END_RECORD)
    raw[end + 8 : end + 12] = (1).to_bytes(2, "little") * 2  # entries on this disk, entries in total
    path.write_bytes(bytes(raw))
    assert codes(run(path, limits=ZipLimits(max_entries=3))[1]) == ["zip.too_many_entries"]


def as_zip64(raw: bytes) -> bytes:
    """Rewrite a small zip's end record the way zip64 writers do: real numbers in a zip64 record."""
    end = raw.rfind(zipread.END_RECORD)
    count = int.from_bytes(raw[end + 10 : end + 12], "little")
    cd_size = int.from_bytes(raw[end + 12 : end + 16], "little")
    cd_offset = int.from_bytes(raw[end + 16 : end + 20], "little")
    little = int.to_bytes
    record = b"".join([
        zipread.ZIP64_END_RECORD, little(44, 8, "little"), little(45, 2, "little") * 2, bytes(8),
        little(count, 8, "little") * 2, little(cd_size, 8, "little"), little(cd_offset, 8, "little"),
    ])  # fmt: skip
    locator = zipread.ZIP64_LOCATOR + bytes(4) + little(end, 8, "little") + little(1, 4, "little")
    tail = zipread.END_RECORD + bytes(4) + b"\xff\xff" * 2 + b"\xff\xff\xff\xff" * 2 + bytes(2)
    return raw[:end] + record + locator + tail


def test_a_zip64_end_record_is_counted_from_its_real_count(tmp_path):
    path = build(tmp_path / "up.zip", [("users.csv", CSV), ("orgs.csv", CSV)])
    path.write_bytes(as_zip64(path.read_bytes()))
    package, findings = run(path, limits=ZipLimits(max_entries=2))
    assert findings.items == [] and package.read("orgs.csv") == CSV
    assert codes(run(path, limits=ZipLimits(max_entries=1))[1]) == ["zip.too_many_entries"]


# --- entries that are never read --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["/users.csv", "\\users.csv", "C:users.csv", "c:/users.csv", "../users.csv", "a/../users.csv",
     "a\\users.csv", "a/..", "../"],
)  # fmt: skip
def test_unsafe_names_are_ignored(tmp_path, name):
    package, findings = zip_of(tmp_path, name, "orgs.csv")
    assert list(package.entries) == ["orgs.csv"]
    finding = only(findings, "zip.unsafe_name")
    assert (finding.severity, finding.value) == (Severity.ERROR, name)


def test_a_nul_in_a_name_is_unsafe(tmp_path):
    path = build(tmp_path / "up.zip", [("usersX.csv", CSV)])
    path.write_bytes(path.read_bytes().replace(b"usersX.csv", b"users\0.csv"))
    package, findings = run(path)
    assert package.entries == {} and codes(findings) == ["zip.unsafe_name"]


@pytest.mark.parametrize("name", ["a..b/users.csv", "..users.csv", "a/.../users.csv", "./users.csv"])
def test_names_that_only_look_unsafe_are_not(tmp_path, name):
    assert "zip.unsafe_name" not in codes(zip_of(tmp_path, name)[1])


def unix_file(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def test_a_symlink_is_ignored_and_a_regular_unix_file_is_not(tmp_path):
    files: list[Spec] = [(unix_file("users.csv", 0o120777), b"/etc/passwd"), (unix_file("orgs.csv", 0o100644), CSV)]
    package, findings = run(build(tmp_path / "up.zip", files))
    assert list(package.entries) == ["orgs.csv"]
    finding = only(findings, "zip.symlink_entry")
    assert (finding.file, finding.value, finding.severity) == ("users.csv", "users.csv", Severity.ERROR)
    assert len(findings.items) == 1


def test_an_encrypted_entry_is_ignored(tmp_path):
    files: list[Spec] = [("users.csv", CSV, set_attr(flag_bits=0x1)), ("orgs.csv", CSV)]
    package, findings = run(build(tmp_path / "up.zip", files))
    assert list(package.entries) == ["orgs.csv"] and codes(findings) == ["zip.encrypted_entry"]
    with package, pytest.raises(KeyError):
        package.read("users.csv")


@pytest.mark.parametrize("change", [{"compress_type": 99}, {"flag_bits": 0x20}], ids=["method-99", "patched"])
def test_an_unsupported_compression_is_ignored(tmp_path, change):
    package, findings = run(build(tmp_path / "up.zip", [("users.csv", CSV, set_attr(**change))]))
    assert package.entries == {} and codes(findings) == ["zip.unsupported_compression"]
    assert only(findings, "zip.unsupported_compression").file == "users.csv"


@pytest.mark.parametrize("name", ["__MACOSX/._users.csv", ".DS_Store", "export/.DS_Store", "Thumbs.db", "desktop.ini"])
def test_operating_system_artefacts_are_ignored_with_a_warning(tmp_path, name):
    package, findings = zip_of(tmp_path, "users.csv", name)
    assert list(package.entries) == ["users.csv"]
    finding = only(findings, "zip.ignored_entry")
    assert (finding.severity, finding.value) == (Severity.WARNING, name)
    assert len(findings.items) == 1  # artefacts in a folder do not count as a misplaced package


def test_directory_entries_are_skipped_silently(tmp_path):
    package, findings = zip_of(tmp_path, "old/", "users.csv", "__MACOSX/")
    assert list(package.entries) == ["users.csv"] and findings.items == []


@pytest.mark.parametrize("name", ["users.zip", "Backup.ZIP"])
def test_a_zip_inside_the_zip_is_ignored(tmp_path, name):
    package, findings = zip_of(tmp_path, name, "orgs.csv")
    assert list(package.entries) == ["orgs.csv"] and codes(findings) == ["zip.nested_zip"]


def test_a_name_merely_containing_zip_is_not_nested(tmp_path):
    assert codes(zip_of(tmp_path, "zipcodes.csv", "users.zip.csv")[1]) == ["zip.unknown_file"] * 2


# --- where the package sits -------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "severity"), DEVIATION)
def test_one_top_level_folder_is_used_with_a_deviation(tmp_path, mode, severity):
    package, findings = zip_of(tmp_path, "Export/", "Export/users.csv", "Export/orgs.csv", mode=mode)
    assert sorted(package.entries) == ["orgs.csv", "users.csv"]
    assert package.entries["users.csv"].zip_name == "Export/users.csv"
    assert package.read("users.csv") == CSV
    finding = only(findings, "zip.top_level_folder")
    assert (finding.severity, finding.value, finding.file) == (severity, "Export", None)
    assert ("were read from there" in finding.message) is (mode is Mode.LENIENT)  # strict: nothing is used
    assert len(findings.items) == 1


LAYOUTS = {
    "root-wins": (
        ["users.csv", "export/orgs.csv", "export/notes.txt"],
        ["users.csv"],
        [("orgs.csv", "export/orgs.csv"), (None, "export/notes.txt")],
    ),
    "fullest-folder": (
        ["a/users.csv", "b/users.csv", "b/orgs.csv"], ["b/users.csv", "b/orgs.csv"], [("users.csv", "a/users.csv")],
    ),
    "tie-by-name": (["b/users.csv", "a/orgs.csv"], ["a/orgs.csv"], [("users.csv", "b/users.csv")]),
    "nested-deeper": (
        ["export/users.csv", "export/old/orgs.csv"], ["export/users.csv"], [("orgs.csv", "export/old/orgs.csv")],
    ),
    "stray-root-file": (["readme.txt", "export/users.csv"], ["export/users.csv"], [(None, "readme.txt")]),
}  # fmt: skip


@pytest.mark.parametrize(("names", "used", "misplaced"), LAYOUTS.values(), ids=LAYOUTS.keys())
def test_one_folder_is_the_package_and_the_rest_is_misplaced(tmp_path, names, used, misplaced):
    package, findings = zip_of(tmp_path, *names)
    assert [e.zip_name for e in package.entries.values()] == used
    assert [(f.file, f.value) for f in findings.items if f.code == "zip.misplaced_entry"] == misplaced
    assert all(f.severity is Severity.ERROR for f in findings.items if f.code == "zip.misplaced_entry")
    in_folder = "/" in used[0]
    assert ("zip.top_level_folder" in codes(findings)) == in_folder


# --- file names -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "severity"), DEVIATION)
def test_a_case_only_difference_maps_to_the_canonical_name(tmp_path, mode, severity):
    package, findings = zip_of(tmp_path, "Users.csv", "academicsessions.csv", "orgs.csv", mode=mode)
    assert sorted(package.entries) == ["academicSessions.csv", "orgs.csv", "users.csv"]
    assert package.entries["users.csv"].zip_name == "Users.csv"
    assert package.read("academicSessions.csv") == CSV
    cased = [f for f in findings.items if f.code == "zip.file_name_case"]
    assert [(f.file, f.value, f.severity) for f in cased] == [
        ("users.csv", "Users.csv", severity), ("academicSessions.csv", "academicsessions.csv", severity),
    ]  # fmt: skip
    assert len(findings.items) == 2


@pytest.mark.parametrize("mode", Mode)
@pytest.mark.parametrize("name", ["notes.txt", "enrolments.csv", "users-old.csv"])
def test_an_unknown_file_is_not_read_and_is_an_error_in_both_modes(tmp_path, mode, name):
    # A package holds only OneRoster files (spec section 2); a misspelt file would otherwise vanish silently.
    package, findings = zip_of(tmp_path, name, "users.csv", mode=mode)
    assert list(package.entries) == ["users.csv"]
    finding = only(findings, "zip.unknown_file")
    assert (finding.file, finding.value, finding.severity) == (None, name, Severity.ERROR)


def test_an_exact_duplicate_keeps_the_first(tmp_path):
    path = build(tmp_path / "up.zip", [("users.csv", b"first\n"), ("users.csv", b"second\n")])
    package, findings = run(path)
    assert package.read("users.csv") == b"first\n"
    finding = only(findings, "zip.duplicate_entry")
    assert (finding.file, finding.severity) == ("users.csv", Severity.ERROR)


def test_a_case_variant_of_a_present_file_is_a_duplicate(tmp_path):
    path = build(tmp_path / "up.zip", [("users.csv", b"first\n"), ("Users.csv", b"second\n")])
    package, findings = run(path, mode=Mode.STRICT)
    assert package.read("users.csv") == b"first\n"
    assert codes(findings) == ["zip.duplicate_entry"]
    assert only(findings, "zip.duplicate_entry").value == "Users.csv"


# --- size limits ------------------------------------------------------------------------------------------


def test_a_zip_bomb_entry_is_dropped(tmp_path):
    path = build(tmp_path / "up.zip", [("users.csv", bytes(50 * MIB)), ("orgs.csv", CSV)])
    package, findings = run(path)
    assert not package.fatal and list(package.entries) == ["orgs.csv"]
    finding = only(findings, "zip.ratio_exceeded")
    assert (finding.file, finding.severity) == ("users.csv", Severity.ERROR)
    # The value is the ratio itself (50 MiB of zeros deflate far beyond the 200:1 limit), not the name.
    ratio, one = finding.value.split(":")
    assert one == "1" and int(ratio) > 200


def test_ratio_is_not_checked_on_small_entries_and_allows_ordinary_ones(tmp_path):
    incompressible = random.Random(3).randbytes(2 * MIB)
    path = build(tmp_path / "up.zip", [("users.csv", bytes(MIB)), ("orgs.csv", incompressible)])
    package, findings = run(path)
    assert sorted(package.entries) == ["orgs.csv", "users.csv"] and findings.items == []


@pytest.mark.parametrize(("limit", "fatal"), [(2 * len(CSV) - 1, True), (2 * len(CSV), False)])
def test_a_total_over_the_limit_is_fatal(tmp_path, limit, fatal):
    package, findings = zip_of(tmp_path, "users.csv", "orgs.csv", limits=ZipLimits(max_total_bytes=limit))
    assert package.fatal is fatal and len(package.entries) == (0 if fatal else 2)
    assert codes(findings) == (["zip.too_large"] if fatal else [])
    if fatal:  # the value is the total that went over the limit
        assert only(findings, "zip.too_large").value == f"{2 * len(CSV)} bytes"


def test_only_entries_that_would_be_read_count_towards_the_total(tmp_path):
    files: list[Spec] = [("users.csv", CSV), ("orgs.csv", bytes(50 * MIB)), ("big.txt", bytes(MIB))]
    package, findings = run(build(tmp_path / "up.zip", files), limits=ZipLimits(max_total_bytes=MIB))
    assert list(package.entries) == ["users.csv"]
    assert sorted(codes(findings)) == ["zip.ratio_exceeded", "zip.unknown_file"]


# --- every entry is accounted for -------------------------------------------------------------------------

NAME_PARTS = st.sampled_from(["users.csv", "Users.csv", "orgs.csv", "x.txt", "a", "B", "..", ".DS_Store", "z.zip"])
NAMES = st.lists(st.lists(NAME_PARTS, min_size=1, max_size=3).map("/".join), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=NAMES, strict=st.booleans())
def test_every_file_entry_is_either_used_or_reported(tmp_path, names, strict):
    package, findings = zip_of(tmp_path, *names, mode=Mode.STRICT if strict else Mode.LENIENT)
    with package:
        reported = [f for f in findings.items if f.code not in ("zip.file_name_case", "zip.top_level_folder")]
        assert len(reported) + len(package.entries) == len(names)
        for name in package.entries:
            assert package.read(name) == CSV
