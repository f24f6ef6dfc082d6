"""Settings from TOML: defaults, the two shipped files, error messages that name file and key, `rosterd tenant`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest
from argon2 import PasswordHasher

from daemon import config
from daemon.config import (
    AdminConfig,
    ConfigError,
    DefenderConfig,
    HealthConfig,
    IntakeConfig,
    OutboxConfig,
    ServerConfig,
    Settings,
    SnapshotsConfig,
    StorageConfig,
    StoreConfig,
    TenantConfig,
    ValidationConfig,
    add_tenant,
    load_settings,
    parse_settings,
)
from daemon.snapshots.holds import HoldThresholds
from daemon.targets.cers.settings import CersFilters, CersMapping, CersTarget, CognitoSettings
from daemon.targets.settings import ApiConfig, ApiTarget, RateLimit, Scope, SftpAuth, SftpTarget, WebhookSecret, WebhookTarget, Window

REPO = Path(__file__).resolve().parents[1]
ROSTERD = Path(sys.executable).parent / "rosterd"
GiB = 1024**3
BCRYPT = "$2b$12$" + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"


@pytest.fixture(scope="module")
def public_key() -> str:
    return asyncssh.generate_private_key("ssh-ed25519", comment="sis@example").export_public_key().decode().strip()


def write(tmp_path: Path, text: str, name: str = "rosterd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


# -- defaults and the shipped files -------------------------------------------------------------------------


def test_defaults_are_the_documented_ones() -> None:
    s = Settings(source=Path("x.toml"))
    assert (s.server.host, s.server.port, s.server.min_free_bytes) == ("127.0.0.1", 2222, GiB)
    assert (s.server.max_auth_tries, s.server.login_grace_seconds, s.server.idle_timeout_seconds) == (6, 120, 900)
    assert (s.server.max_sessions_per_tenant, s.server.max_sessions_per_ip) == (5, 10)
    d = s.defender
    assert (d.enabled, d.threshold, d.observation_minutes, d.ban_minutes, d.ban_multiplier) == (True, 15, 30, 30, 2)
    assert (d.score_unknown_user, d.score_bad_password, d.score_limit_exceeded) == (2, 1, 3)
    v = s.validation
    assert (v.mode, v.max_dropped_share, v.max_total_bytes, v.max_entries, v.max_ratio) == (
        "lenient", 0.01, 4 * GiB, 200, 200.0
    )
    h = s.holds  # as config/rosterd.example.toml documents them
    assert (h.users_deleted_share, h.enrollments_deleted_share, h.school_deleted, h.changed_share) == (
        0.10, 0.10, True, 0.50
    )
    i = s.intake
    assert (i.settle_seconds, i.rescan_seconds, i.workers, i.quarantine_days, i.receipts_kept) == (5, 60, 2, 30, 100)
    t = TenantConfig(name="t", demo=True)
    assert (t.max_upload_bytes, t.inbox_quota_bytes, t.validation_mode, t.allowed_networks) == (
        2 * GiB, 10 * GiB, None, []
    )


def test_no_config_means_the_source_trees_default_with_the_demo_tenant() -> None:
    s = load_settings(None)
    assert s.source == REPO / "config" / "rosterd.toml"
    assert (s.server.host, s.server.port) == ("127.0.0.1", 2222)
    assert s.server.state_dir == REPO / "var"
    assert [(t.name, t.demo) for t in s.tenants] == [("demo", True)]
    assert s.tenant_root("demo") == REPO / "var" / "tenants" / "demo"


def test_a_missing_default_asks_for_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(config, "DEFAULT_CONFIG", tmp_path / "nowhere.toml")
    with pytest.raises(ConfigError, match=r"nowhere\.toml: .*--config PATH"):
        load_settings(None)


def test_the_example_is_valid_has_no_demo_and_shows_every_key() -> None:
    path = REPO / "config" / "rosterd.example.toml"
    s = load_settings(path)
    assert s.tenants and not any(t.demo for t in s.tenants)
    tenant = s.tenants[0]
    assert tenant.password_hash.startswith("$argon2id$") and tenant.authorized_keys and tenant.allowed_networks
    text = path.read_text()
    for model in (ServerConfig, DefenderConfig, ValidationConfig, IntakeConfig, HoldThresholds, SnapshotsConfig,
                  OutboxConfig, TenantConfig, CersTarget, CognitoSettings, CersMapping, CersFilters, WebhookTarget,
                  SftpTarget, Scope, Window, SftpAuth, WebhookSecret, HealthConfig, ApiConfig, ApiTarget, RateLimit,
                  AdminConfig, StoreConfig, StorageConfig):
        for key in model.model_fields:
            shown = rf"^(#? *{key} *=|\[tenants\.targets\.{key}\])"  # a key, or a sub-table of a target
            assert re.search(shown, text, re.MULTILINE), f"{model.__name__}.{key} is not in the example"


def test_every_key_in_the_example_has_a_comment() -> None:
    lines = (REPO / "config" / "rosterd.example.toml").read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^\w+ *=", line):
            commented = " #" in line or lines[number - 1].startswith("#")
            assert commented, f"line {number + 1} has no comment: {line}"


def test_relative_state_dir_is_taken_from_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = write(tmp_path / "etc", '[server]\nstate_dir = "../state"\n')
    assert load_settings(path).server.state_dir == tmp_path / "state"
    path = write(tmp_path / "etc", f'[server]\nstate_dir = "{tmp_path / "abs"}"\n')
    assert load_settings(path).server.state_dir == tmp_path / "abs"


def test_tenant_root_refuses_what_is_not_a_name() -> None:
    s = Settings(source=Path("x.toml"))
    with pytest.raises(ValueError):
        s.tenant_root("../other")


def test_a_full_tenant_loads(tmp_path: Path, public_key: str) -> None:
    path = write(tmp_path, f"""
[[tenants]]
name = "district-7"
password_hash = "{BCRYPT}"
authorized_keys = ["{public_key}"]
allowed_networks = ["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"]
validation_mode = "strict"
[[tenants.targets]]
type = "cers"
dry_run = true
mapping = {{ student_id = "userIds:CA-SSID", teachers = "primary" }}
""")
    tenant = load_settings(path).tenant("district-7")
    assert tenant is not None
    assert tenant.authorized_keys == [public_key]
    assert [str(n) for n in tenant.allowed_networks] == ["192.0.2.0/24", "2001:db8::/32", "198.51.100.7/32"]
    assert tenant.validation_mode == "strict"
    (cers,) = tenant.targets
    assert (cers.name, cers.dry_run, cers.mapping.student_id, cers.mapping.teachers) == ("cers", True, "userIds:CA-SSID", "primary")
    assert cers.mapping.school_id == "identifier" and cers.mapping.group_name == "{classCode}"
    assert tenant.auth_kinds == ["password", "1 key"]


# -- errors name the file and the key ----------------------------------------------------------------------


def test_a_typod_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nmax_auth_trys = 3\n\n[intake]\nworkers = 2\n")
    assert problems(path) == [f"{path}: server.max_auth_trys: unknown key; did you mean 'max_auth_tries'?"]


def test_an_unknown_section_lists_the_known_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "[database]\nurl = 'x'\n")
    (problem,) = problems(path)
    assert problem.startswith(f"{path}: database: unknown key; known keys here: server, defender,")


def test_a_bad_cidr_names_the_tenant_and_the_entry(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
[[tenants]]
name = "a"
password_hash = "{BCRYPT}"
[[tenants]]
name = "b"
password_hash = "{BCRYPT}"
allowed_networks = ["10.0.0.0/8", "10.0.0.300/24", "10.1.2.3/16"]
""")
    assert problems(path) == [
        f"{path}: tenants[1].allowed_networks[1]: '10.0.0.300/24' is not an IPv4 or IPv6 network "
        '(CIDR such as "192.0.2.0/24")',
        f"{path}: tenants[1].allowed_networks[2]: '10.1.2.3/16' has host bits set; the network is '10.1.0.0/16'",
    ]


def test_a_plaintext_password_is_refused_without_being_repeated(tmp_path: Path) -> None:
    path = write(tmp_path, '[[tenants]]\nname = "ok"\ndemo = true\n'
                           '[[tenants]]\nname = "a"\npassword_hash = "Summer2026!"\n')  # fmt: skip
    (problem,) = problems(path)
    assert problem.startswith(f"{path}: tenants[1].password_hash: this looks like a plaintext password")
    assert "rosterd tenant add" in problem and "Summer2026!" not in problem


def test_a_hash_of_the_wrong_kind_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[[tenants]]\nname = "a"\npassword_hash = "$argon2i$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"\n')
    (problem,) = problems(path)
    assert problem.startswith(f"{path}: tenants[0].password_hash: not an argon2id ($argon2id$...) or bcrypt")


def test_a_cers_target_that_sends_needs_a_credential_and_never_holds_the_secret(tmp_path: Path) -> None:
    path = write(tmp_path, '[[tenants]]\nname = "a"\ndemo = true\n[[tenants.targets]]\ntype = "cers"\n')
    (problem,) = problems(path)
    assert problem.startswith(f"{path}: tenants[0].targets[0]: a CERS target that sends (dry_run = false) needs")
    path = write(tmp_path, '[[tenants]]\nname = "a"\ndemo = true\n[[tenants.targets]]\ntype = "cers"\n'
                           '[tenants.targets.cognito]\nclient_id = "c"\nusername = "u"\nsecret = "hunter2"\n')  # fmt: skip
    (problem,) = problems(path)
    assert "tenants[0].targets[0].cognito.secret: unknown key" in problem and "hunter2" not in problem


def test_target_names_differ_within_a_tenant(tmp_path: Path) -> None:
    target = '[[tenants.targets]]\ntype = "cers"\ndry_run = true\n'
    path = write(tmp_path, '[[tenants]]\nname = "a"\ndemo = true\n' + target + target)
    assert problems(path) == [f"{path}: tenants[0].targets: target names must differ within a tenant; repeated: cers"]


def test_a_duplicate_tenant_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, '[[tenants]]\nname = "a"\ndemo = true\n[[tenants]]\nname = "b"\ndemo = true\n'
                           '[[tenants]]\nname = "a"\ndemo = true\n')  # fmt: skip
    assert problems(path) == [f"{path}: tenants: tenants[0] and tenants[2] are both named 'a'"]


def test_a_bad_public_key_is_named(tmp_path: Path, public_key: str) -> None:
    private = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    path = write(tmp_path, f"""
[[tenants]]
name = "a"
authorized_keys = ["{public_key}", "ssh-ed25519 AAAAnotbase64", '''{private}''']
""")
    got = problems(path)
    assert got == [
        f"{path}: tenants[0].authorized_keys[1]: not an OpenSSH public key line (one line: TYPE BASE64 [COMMENT])",
        f"{path}: tenants[0].authorized_keys[2]: this is a private key; give the public key (the .pub file) instead",
    ]


def test_a_weak_rsa_key_is_refused(tmp_path: Path) -> None:
    weak = asyncssh.generate_private_key("ssh-rsa", key_size=1024).export_public_key().decode().strip()
    path = write(tmp_path, f'[[tenants]]\nname = "a"\nauthorized_keys = ["{weak}"]\n')
    assert problems(path) == [f"{path}: tenants[0].authorized_keys[0]: an RSA key of 1024 bits is too weak; "
                              "use 3072 bits or ed25519"]  # fmt: skip


def test_a_toml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = 2222\nhost "0.0.0.0"\n')
    (problem,) = problems(path)
    assert problem.startswith(f"{path}: TOML syntax error at line 3, column 6: ")


def test_a_tenant_that_cannot_log_in_and_a_bad_name(tmp_path: Path) -> None:
    path = write(tmp_path, '[[tenants]]\nname = "a"\n[[tenants]]\nname = "Bad/Name"\ndemo = true\n')
    assert problems(path) == [
        f"{path}: tenants[0]: a tenant needs a password_hash, authorized_keys or both",
        f"{path}: tenants[1].name: a tenant name is 1 to 63 of a-z, 0-9, '_' and '-', starting with a letter or "
        "digit (got 'Bad/Name')",
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = 70000\n[validation]\nmode = "loose"\nmax_dropped_share = 2\n'
                           '[intake]\nworkers = "two"\n')  # fmt: skip
    assert problems(path) == [
        f"{path}: server.port: Input should be less than or equal to 65535",
        f"{path}: validation.mode: Input should be 'lenient' or 'strict'",
        f"{path}: validation.max_dropped_share: Input should be less than or equal to 1",
        f"{path}: intake.workers: Input should be a valid integer, unable to parse string as an integer",
    ]


def test_source_is_not_a_setting(tmp_path: Path) -> None:
    path = write(tmp_path, 'source = "/etc/passwd"\n[server]\nport = 0\n')
    assert problems(path) == [
        f"{path}: source: not a setting (rosterd records the file's path itself)",
        f"{path}: server.port: Input should be greater than or equal to 1",
    ]


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    assert problems(tmp_path / "absent.toml") == [f"{tmp_path / 'absent.toml'}: cannot read: No such file or directory"]


# -- rosterd tenant add / list ------------------------------------------------------------------------------


def rosterd(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([str(ROSTERD), *args], input=stdin, capture_output=True, text=True, timeout=60)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write(tmp_path, (REPO / "config" / "rosterd.toml").read_text())


def test_tenant_add_writes_only_the_hash_and_the_result_loads(config_file: Path, public_key: str) -> None:
    password = "correct horse battery staple 7"
    key_file = config_file.parent / "sis.pub"
    key_file.write_text(public_key + "\n")
    out = rosterd("tenant", "add", "acme", "--config", str(config_file), "--password-stdin", "--key", str(key_file),
                  "--network", "192.0.2.0/24", "--network", "2001:db8::/32", stdin=password + "\n")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert password not in out.stdout + out.stderr
    text = config_file.read_text()
    assert password not in text
    tenant = load_settings(config_file).tenant("acme")
    assert tenant is not None and tenant.password_hash.startswith("$argon2id$")
    assert PasswordHasher().verify(tenant.password_hash, password)  # the newline was stripped, spaces kept
    assert tenant.authorized_keys == [public_key]
    assert [str(n) for n in tenant.allowed_networks] == ["192.0.2.0/24", "2001:db8::/32"]
    assert load_settings(config_file).tenant("demo") is not None  # what was there is kept

    listing = rosterd("tenant", "list", "--config", str(config_file))
    assert listing.returncode == 0
    assert listing.stdout.splitlines() == [
        "demo  demo key (insecure); from any network",
        "acme  password, 1 key; from 192.0.2.0/24, 2001:db8::/32",
    ]
    assert "$argon2id$" not in listing.stdout


def test_tenant_add_refuses_a_duplicate_and_leaves_the_file(config_file: Path) -> None:
    before = config_file.read_bytes()
    out = rosterd("tenant", "add", "demo", "--config", str(config_file), "--password-stdin", stdin="pw\n")
    assert out.returncode == 1
    assert out.stderr.strip() == f"{config_file}: tenants: a tenant named 'demo' exists already"
    assert config_file.read_bytes() == before


def test_tenant_add_leaves_the_file_when_the_result_is_invalid(config_file: Path) -> None:
    before = config_file.read_bytes()
    out = rosterd("tenant", "add", "Bad Name", "--config", str(config_file), "--password-stdin",
                  "--network", "10.0.0.0/33", stdin="secret-pw\n")  # fmt: skip
    assert out.returncode == 1
    assert f"{config_file}: tenants[1].name: a tenant name is" in out.stderr
    assert f"{config_file}: tenants[1].allowed_networks[0]: '10.0.0.0/33' is not" in out.stderr
    assert "secret-pw" not in out.stderr
    assert config_file.read_bytes() == before
    assert [p.name for p in config_file.parent.iterdir()] == [config_file.name]  # no temp file left


def test_tenant_add_refuses_unusable_arguments(config_file: Path, tmp_path: Path) -> None:
    assert rosterd("tenant", "add", "x", "--config", str(config_file)).returncode == 2  # neither key nor password
    assert rosterd("tenant", "add", "x", "--config", str(tmp_path / "none.toml"), "--password-stdin",
                   stdin="pw\n").returncode == 2  # fmt: skip
    assert rosterd("tenant", "add", "x", "--config", str(config_file), "--password-stdin", stdin="\n").returncode == 2
    private = tmp_path / "id_ed25519"
    private.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    out = rosterd("tenant", "add", "x", "--config", str(config_file), "--key", str(private))
    assert out.returncode == 2 and "this is a private key" in out.stderr
    assert private.read_text().splitlines()[1] not in out.stderr
    assert "name = \"x\"" not in config_file.read_text()


def test_add_tenant_keeps_the_files_mode(config_file: Path, public_key: str) -> None:
    config_file.chmod(0o640)
    tenant = add_tenant(config_file, "keys-only", keys=[public_key, public_key.replace("sis@", "ops@")])
    assert tenant.password_hash is None and len(tenant.authorized_keys) == 2
    assert config_file.stat().st_mode & 0o777 == 0o640
    assert load_settings(config_file).tenant("keys-only") == tenant


def test_names_and_keys_are_written_as_toml_strings(config_file: Path, public_key: str) -> None:
    odd_comment = public_key.replace("sis@example", 'ops "night" \\ shift')
    add_tenant(config_file, "odd", keys=[odd_comment])
    assert load_settings(config_file).tenant("odd").authorized_keys == [odd_comment]


def test_cli_import_stays_light() -> None:
    code = "import sys, daemon.cli; print(sorted({'pydantic', 'asyncssh', 'structlog', 'argon2'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_typo_inside_a_target_is_named_by_its_toml_path_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, '[[tenants]]\nname = "a"\ndemo = true\nholds = { users_deleted_shar = 0.1 }\n'
                           '[[tenants.targets]]\ntype = "cers"\ndry_run = true\ndryrun = 1\n'
                           '[tenants.targets.cognito]\nsecrte = 1\n'
                           '[[tenants.targets]]\ntype = "webhook"\nname = "w"\nurl = "http://example.com/h"\n'
                           '[[tenants.targets]]\ntype = "ftp"\n')  # fmt: skip
    assert sorted(problems(path)) == sorted([
        f"{path}: tenants[0].holds.users_deleted_shar: unknown key; did you mean 'users_deleted_share'?",
        f"{path}: tenants[0].targets[0].dryrun: unknown key; did you mean 'dry_run'?",
        f"{path}: tenants[0].targets[0].cognito.secrte: unknown key; did you mean 'secret_env'?",
        f"{path}: tenants[0].targets[1].url: 'http://example.com/h': a webhook URL is https:// (plain http only "
        "to this machine)",
        f"{path}: tenants[0].targets[2]: Input tag 'ftp' found using 'type' does not match any of the expected "
        "tags: 'cers', 'webhook', 'sftp', 'api'",
    ])  # fmt: skip


def test_licence_targets_need_their_secrets_by_source_and_a_sane_window(tmp_path: Path) -> None:
    base = '[[tenants]]\nname = "a"\ndemo = true\n[[tenants.targets]]\n'
    path = write(tmp_path, base + 'type = "webhook"\nname = "w"\nurl = "https://v.example/h"\n')
    assert problems(path) == [f"{path}: tenants[0].targets[0]: a webhook target needs signing.secret_credential, "
                              "secret_env or secret_file"]  # fmt: skip
    path = write(tmp_path, base + 'type = "sftp"\nname = "s"\nhost = "h"\nhost_key = "k"\nauth = { username = "u" }\n'
                 'window = { daily = "2:00-3:00", time_zone = "Mars/Base" }\n')  # fmt: skip
    found = problems(path)
    assert f"{path}: tenants[0].targets[0].window.daily: '2:00-3:00': write the window as HH:MM-HH:MM, e.g. " \
           '"00:00-02:00"' in found
    assert any("window.time_zone: 'Mars/Base' is not an IANA time zone" in p for p in found)


# -- OneRoster API targets ----------------------------------------------------------------------------------

API_TENANT = '[[tenants]]\nname = "a"\ndemo = true\n[[tenants.targets]]\ntype = "webhook"\nname = "hook"\n' \
    'url = "https://vendor.example/hook"\nsigning.secret_env = "HOOK"\n'  # fmt: skip


def test_an_api_target_loads_with_its_defaults_and_gets_its_publications_as_deliveries(tmp_path: Path) -> None:
    path = write(tmp_path, API_TENANT + '[[tenants.targets]]\ntype = "api"\nname = "mathco"\n'
                 '[tenants.targets.scope]\nroles = ["student", "teacher"]\n')  # fmt: skip
    target = load_settings(path).tenants[0].targets[1]
    assert isinstance(target, ApiTarget) and target.scope == Scope(roles=["student", "teacher"])
    assert (target.versions, target.token_seconds, target.tobedeleted_days) == (["1.1", "1.2"], 3600, 30)
    assert (target.rate_limit.requests_per_second, target.rate_limit.burst) == (20.0, 40)
    assert load_settings(path).target_names() == {"a": ["hook", "mathco"]}  # a delivery makes what the API serves


def test_an_api_target_takes_its_own_keys(tmp_path: Path) -> None:
    path = write(tmp_path, '[[tenants]]\nname = "a"\ndemo = true\n[[tenants.targets]]\ntype = "api"\n'
                 'name = "sds"\nversions = ["1.1"]\ntoken_seconds = 600\ntobedeleted_days = 0\n'
                 '[tenants.targets.rate_limit]\nrequests_per_second = 5\nburst = 10\n')  # fmt: skip
    target = load_settings(path).tenants[0].targets[0]
    assert (target.versions, target.token_seconds, target.tobedeleted_days) == (["1.1"], 600, 0)
    assert (target.rate_limit.requests_per_second, target.rate_limit.burst) == (5.0, 10)


def test_an_api_target_refuses_what_does_not_apply_or_cannot_be(tmp_path: Path) -> None:
    head = '[[tenants]]\nname = "a"\ndemo = true\n[[tenants.targets]]\ntype = "api"\n'
    cases = {
        'name = "x"\n[tenants.targets.window]\ndaily = "00:00-02:00"\n': "tenants[0].targets[0].window: unknown key",
        'name = "x"\nversions = ["2.0"]\n': "tenants[0].targets[0].versions[0]: Input should be '1.1' or '1.2'",
        'name = "x"\nversions = []\n': "tenants[0].targets[0].versions: name at least one version",
        'name = "x"\nversions = ["1.2", "1.2"]\n': "tenants[0].targets[0].versions: a version is listed twice",
        'name = "x"\ntoken_seconds = 5\n': "tenants[0].targets[0].token_seconds: Input should be greater than or "
                                          "equal to 60",
        'name = "X/.."\n': "tenants[0].targets[0].name: a target name is 1 to 63 of a-z",
        '': "tenants[0].targets[0].name: Field required",
    }  # fmt: skip
    for body, expected in cases.items():
        (problem,) = problems(write(tmp_path, head + body))
        assert problem.startswith(f"{tmp_path / 'rosterd.toml'}: {expected}"), problem


@pytest.mark.parametrize(("toml", "problem"), [
    ('[store]\nurl = "postgresql://rosterd:hunter2@db/rosterd"\n', "no password in the url"),
    ('[store]\nurl = "mysql://rosterd@db/rosterd"\n', "only postgresql://"),
    ('[storage]\nkind = "s3"\nbucket = "rosterd"\n', "an s3 storage needs bucket, access_key_id"),
    ('[storage]\nkind = "ftp"\n', "storage.kind"),
])  # fmt: skip
def test_store_and_storage_settings_refuse_what_cannot_work(tmp_path: Path, toml: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_settings(toml, tmp_path / "rosterd.toml")
    assert problem in str(refused.value) and "hunter2" not in str(refused.value)


def test_a_postgresql_store_and_an_s3_storage_are_taken_with_their_secret_sources(tmp_path: Path) -> None:
    settings = parse_settings('[store]\nurl = "postgresql://rosterd@db:5432/rosterd"\nsecret_env = "PGPASS"\n'
                              '[storage]\nkind = "s3"\nendpoint = "http://127.0.0.1:8333"\nbucket = "b"\n'
                              'access_key_id = "AK"\nsecret_file = "s3.secret"\n', tmp_path / "rosterd.toml")
    assert settings.store.postgresql and settings.store.secret_source == "environment variable PGPASS"
    assert (settings.storage.kind, settings.storage.bucket, settings.storage.prefix) == ("s3", "b", "")
    assert not parse_settings("", tmp_path / "rosterd.toml").store.postgresql  # SQLite by default
