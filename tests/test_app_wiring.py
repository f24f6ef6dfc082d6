"""How settings become what the stages are given: a tenant's validation options and its own hold thresholds over
the [holds] ones, and the receipts writer handed to a CERS target for its dry runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.app import make_targets, tenant_rules
from daemon.config import parse_settings
from daemon.oneroster.findings import Mode
from daemon.oneroster.validate import ValidateOptions
from daemon.oneroster.zipread import ZipLimits
from daemon.snapshots.holds import HoldThresholds
from daemon.receipts import RESULT_FOLDERS, Receipts
from daemon.store import Store

CONFIG = """
[validation]
max_dropped_share = 0.02
max_total_bytes = 1000000
max_entries = 50
max_ratio = 100.0

[holds]
users_deleted_share = 0.2
changed_share = 0.4

[[tenants]]
name = "strict"
demo = true
validation_mode = "strict"
holds = { users_deleted_share = 0.05 }

[[tenants]]
name = "plain"
demo = true
"""


def test_a_tenants_own_thresholds_override_only_the_keys_it_sets() -> None:
    settings = parse_settings(CONFIG, Path("/etc/rosterd/rosterd.toml"))
    strict = tenant_rules(settings, settings.tenant("strict")).holds
    plain = tenant_rules(settings, settings.tenant("plain")).holds
    assert strict == HoldThresholds(users_deleted_share=0.05, enrollments_deleted_share=0.10, school_deleted=True,
                                    changed_share=0.4)  # fmt: skip
    assert plain == HoldThresholds(users_deleted_share=0.2, enrollments_deleted_share=0.10, school_deleted=True,
                                   changed_share=0.4)  # fmt: skip


def test_a_tenants_validation_options_are_the_validation_section_with_its_own_mode() -> None:
    settings = parse_settings(CONFIG, Path("/etc/rosterd/rosterd.toml"))
    limits = ZipLimits(max_entries=50, max_total_bytes=1000000, max_ratio=100.0)
    assert tenant_rules(settings, settings.tenant("strict")).validate == ValidateOptions(
        mode=Mode.STRICT, limits=limits, max_dropped_share=0.02
    )
    assert tenant_rules(settings, settings.tenant("plain")).validate == ValidateOptions(
        mode=Mode.LENIENT, limits=limits, max_dropped_share=0.02
    )


CERS_DRY_RUN = """
[[tenants]]
name = "north"
demo = true

[[tenants.targets]]
type = "cers"
dry_run = true
"""


async def test_a_cers_dry_run_is_written_by_the_receipts_writer_into_the_folder_sftp_shows(tmp_path: Path) -> None:
    """README: a CERS target in dry-run mode writes the files it would have POSTed to the tenant's
    `results/cers/`, which a tenant lists and reads over SFTP. The target is handed the receipts writer (the
    one writer of results/), and the SFTP layer is told of the same folder."""
    settings = parse_settings(CERS_DRY_RUN, Path("/etc/rosterd/rosterd.toml"))
    store = Store(tmp_path / "rosterd.db")
    writer = Receipts(store, {"north": tmp_path / "north" / "results"})
    try:
        (target,) = make_targets(settings, writer).values()
        assert target.write_files == writer.write_files
        await target.write_files("north", {"rosterd-north-u-1-1.csv": b"group_name\n"})
    finally:
        store.close()
    assert (tmp_path / "north" / "results" / "cers" / "rosterd-north-u-1-1.csv").read_bytes() == b"group_name\n"
    assert RESULT_FOLDERS == ("cers",)


API_AND_CERS = CERS_DRY_RUN + """
[[tenants.targets]]
type = "api"
name = "reader"
"""


def test_an_api_target_gets_a_publication_target(tmp_path: Path) -> None:
    """An api target is pulled by the vendor; its delivery makes the publication its API serves."""
    from daemon.targets.api.target import ApiPublication

    settings = parse_settings(API_AND_CERS, Path("/etc/rosterd/rosterd.toml"))
    store = Store(tmp_path / "rosterd.db")
    try:
        made = make_targets(settings, Receipts(store, {"north": tmp_path / "results"}))
        assert sorted(made) == [("north", "cers"), ("north", "reader")]
        assert isinstance(made[("north", "reader")], ApiPublication)
    finally:
        store.close()


async def test_s3_storage_without_postgresql_or_an_unusable_store_stops_the_start_with_why(tmp_path, monkeypatch) -> None:
    """S3 storage is for replicas, which need PostgreSQL: without it the start stops with what to set, rather than
    run on SQLite beside a shared bucket; a PostgreSQL store whose password cannot be read stops the start with
    the source named."""
    from daemon.app import Daemon, StartupError

    monkeypatch.delenv("ROSTERD_TEST_PGPASS", raising=False)
    for extra, reason in (
        ('[storage]\nkind = "s3"\nbucket = "b"\naccess_key_id = "AK"\nsecret_env = "S3"\n',
         r"\[storage\] kind = \"s3\" is for replicas, which share their state in PostgreSQL"),
        ('[store]\nurl = "postgresql://rosterd@db/rosterd"\nsecret_env = "ROSTERD_TEST_PGPASS"\n',
         r"\[store\]: environment variable ROSTERD_TEST_PGPASS is not set"),
    ):  # fmt: skip
        settings = parse_settings(f'[server]\nstate_dir = "{tmp_path}"\n{extra}', tmp_path / "rosterd.toml")
        daemon = Daemon(settings)
        with pytest.raises(StartupError, match=reason):
            await daemon.start()
        await daemon.stop()