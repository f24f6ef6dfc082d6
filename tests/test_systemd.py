"""systemd/: the unit verifies, its exposure score stays low, the account and directories it expects are made,
the production config loads, and the daemon really works inside the unit's sandbox.

The sandbox test reads the unit's own directives and applies them to a `rosterd serve` process the way
systemd would: the system call allow list (`systemd-analyze syscall-filter` expands the groups), the socket
families, MemoryDenyWriteExecute, NoNewPrivileges, UMask, a read-only file system with a private /tmp,
/proc with only process entries, and an unprivileged user without capabilities. A second process probes that
sandbox, so a sandbox that silently did nothing cannot pass. Not reproduced: PrivateDevices, PrivateUsers,
RestrictNamespaces, LockPersonality, RestrictRealtime, RestrictSUIDSGID and the Protect* settings for
kernel interfaces (none of them is something the daemon uses).

These tests need systemd-analyze, systemd-sysusers and systemd-tmpfiles (`make test` installs systemd where
they are missing) and root (for the sandbox's mount namespace). Without them they fail, never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from daemon.config import Settings, load_settings, parse_settings
from daemon.targets.secrets import SecretMissing

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "rosterd.service"
SYSUSERS = ROOT / "systemd" / "rosterd.sysusers.conf"
TMPFILES = ROOT / "systemd" / "rosterd.tmpfiles.conf"
PRODUCTION = ROOT / "config" / "rosterd.production.toml"
SAMPLE = ROOT / "samples" / "valid-1.1-bulk.zip"
ROSTERD = Path(sys.executable).parent / "rosterd"
INSTALLED_ROSTERD = "/usr/local/bin/rosterd"
MAX_EXPOSURE = 2.5
SANDBOX_UID = 65534  # nobody: an account with no rights anywhere, standing in for rosterd
FAMILIES = {"AF_UNIX": socket.AF_UNIX, "AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6}


def systemd_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: install systemd (`make test` does: apt-get install systemd)")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def unit_settings(text: str) -> dict[str, list[str]]:
    """Every `Key=value` of a unit file, values in order (a key may be given several times)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.fixture(scope="module")
def unit() -> dict[str, list[str]]:
    return unit_settings(UNIT.read_text())


def unit_with_local_binary(directory: Path) -> Path:
    """The unit with one change: ExecStart runs this checkout's rosterd instead of the installed one, since
    verify checks that the binary exists. Every other line is checked exactly as shipped."""
    original = UNIT.read_text().splitlines(keepends=True)
    changed = [line.replace(f"ExecStart={INSTALLED_ROSTERD} ", f"ExecStart={ROSTERD} ", 1) for line in original]
    assert sum(a != b for a, b in zip(original, changed)) == 1, "exactly one ExecStart= line should change"
    copy = directory / UNIT.name  # verify wants the real unit name (rosterd.service)
    copy.write_text("".join(changed))
    return copy


# -- the unit as systemd reads it ------------------------------------------------------------------


def test_unit_verifies_clean(tmp_path: Path) -> None:
    tool = systemd_tool("systemd-analyze")
    result = run(tool, "verify", "--man=no", str(unit_with_local_binary(tmp_path)))
    # verify exits 0 even for lines it ignores as invalid, so any output at all is a failure
    assert (result.returncode, result.stdout + result.stderr) == (0, ""), result.stdout + result.stderr


def test_the_installed_path_is_what_the_unit_runs(unit: dict[str, list[str]]) -> None:
    assert unit["ExecStart"] == [f"{INSTALLED_ROSTERD} serve --config /etc/rosterd/rosterd.toml"]
    assert INSTALLED_ROSTERD in UNIT.read_text().split("[Unit]")[0], "the header comment documents the install path"


def test_exposure_score_is_low() -> None:
    tool = systemd_tool("systemd-analyze")
    result = run(tool, "security", "--offline=true", "--no-pager", str(UNIT))  # the shipped file as it is
    assert result.returncode == 0, result.stderr
    found = re.search(r"Overall exposure level for rosterd\.service: (\d+(?:\.\d+)?)", result.stdout)
    assert found, result.stdout
    score = float(found[1])
    exposed = [line for line in result.stdout.splitlines() if line.startswith("✗")]
    print(f"systemd-analyze security: overall exposure {score} (at most {MAX_EXPOSURE}); still exposed:",
          *exposed, sep="\n  ")  # fmt: skip
    assert score <= MAX_EXPOSURE


def test_every_directive_says_why() -> None:
    lines = UNIT.read_text().splitlines()
    for number, line in enumerate(lines):
        if "=" in line and not line.startswith(("#", ";")):
            assert lines[number - 1].startswith("#"), f"line {number + 1} has no comment above it: {line}"


def test_the_account_and_directories_are_made(tmp_path: Path, unit: dict[str, list[str]]) -> None:
    """sysusers and tmpfiles applied to an empty root: the user the unit runs as, /etc/rosterd for its group."""
    sysusers, tmpfiles = systemd_tool("systemd-sysusers"), systemd_tool("systemd-tmpfiles")
    (tmp_path / "etc").mkdir()
    made = run(sysusers, f"--root={tmp_path}", str(SYSUSERS))
    assert made.returncode == 0, made.stderr
    users = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/group").read_text().splitlines()}
    user = unit["User"][0]
    assert user in users and unit["Group"][0] in groups
    uid, gid, home = int(users[user][2]), int(users[user][3]), users[user][5]
    assert 0 < uid < 1000 and gid == int(groups[user][2])  # a system account, its own group
    assert home == f"/var/lib/{unit['StateDirectory'][0]}"
    assert users[user][6].endswith("nologin")

    made = run(tmpfiles, f"--root={tmp_path}", "--create", str(TMPFILES))
    assert made.returncode == 0, made.stderr
    config = tmp_path / "etc" / unit["ConfigurationDirectory"][0]
    assert (config.stat().st_mode & 0o7777, config.stat().st_uid, config.stat().st_gid) == (0o750, 0, gid)
    assert oct(config.stat().st_mode & 0o7777)[2:] == unit["ConfigurationDirectoryMode"][0].lstrip("0")
    credentials = tmp_path / "etc/rosterd/credentials"
    assert (credentials.stat().st_mode & 0o7777, credentials.stat().st_uid) == (0o700, 0)
    for line in unit["LoadCredential"]:
        assert line.split(":", 1)[1].startswith("/etc/rosterd/credentials/"), line


# -- the production config ------------------------------------------------------------------------


def example_tenant_uncommented() -> str:
    """The production config with its commented-out tenant block switched on, as its comment tells."""
    text = PRODUCTION.read_text()
    head, marker, block = text.partition("\n#[[tenants]]\n")
    assert marker, "the example tenant block starts with #[[tenants]]"
    lines = [line.removeprefix("#") for line in (marker.strip() + "\n" + block).splitlines()]
    return head + "\n" + "\n".join(lines) + "\n"


def test_production_config_loads_for_the_unit(unit: dict[str, list[str]]) -> None:
    settings = load_settings(PRODUCTION)
    assert settings.server.state_dir == Path("/var/lib") / unit["StateDirectory"][0]
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 2222)
    assert unit["CapabilityBoundingSet"] == [""] and settings.server.port >= 1024  # no capability, no port 22
    assert settings.tenants == []  # nothing can log in until an operator adds a tenant


def test_the_example_tenant_gets_its_secret_from_the_units_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unit: dict[str, list[str]]
) -> None:
    settings = parse_settings(example_tenant_uncommented(), PRODUCTION)
    (tenant,) = settings.tenants
    (target,) = tenant.targets
    cognito = target.cognito
    assert (target.type, target.dry_run, cognito.secret_env, cognito.secret_file) == ("cers", True, None, None)
    loaded = dict(line.split(":", 1) for line in unit["LoadCredential"])
    assert cognito.secret_credential in loaded  # the unit hands over what the config asks for

    # systemd's side: the credential file copied into $CREDENTIALS_DIRECTORY, read at the time of use
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    (tmp_path / cognito.secret_credential).write_text("the-toms-secret-key\n")
    assert cognito.read_secret() == "the-toms-secret-key"
    # before an operator puts the file in place, SetCredential= gives a lone newline: a clear error, no start failure
    defaults = dict(line.split(":", 1) for line in unit["SetCredential"])
    assert defaults[cognito.secret_credential] == r"\n"
    (tmp_path / cognito.secret_credential).write_text("\n")
    with pytest.raises(SecretMissing, match="is empty"):
        cognito.read_secret()


def test_no_secret_is_written_in_the_production_config() -> None:
    for line in PRODUCTION.read_text().splitlines():
        key = line.lstrip("#").split("=")[0].strip()
        assert key not in ("secret", "secret_key", "password", "client_secret"), line
        if key == "password_hash":
            assert "cmVwbGFjZS1tZS" in line  # the example's placeholder ("replace-me..."), which matches nothing


# -- the sandbox ----------------------------------------------------------------------------------


def syscall_groups() -> dict[str, list[str]]:
    """`systemd-analyze syscall-filter`: each @group with its members (system calls and other @groups)."""
    listing = run(systemd_tool("systemd-analyze"), "syscall-filter", "--no-pager").stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in listing.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    calls: set[str] = set()
    for name in names:
        calls |= expand(groups[name], groups) if name.startswith("@") else {name}
    return calls


def allowed_syscalls(unit: dict[str, list[str]]) -> set[str]:
    """The unit's SystemCallFilter= lines in systemd's reading: an allow list (with @default), minus ~ lines."""
    groups = syscall_groups()
    allowed: set[str] | None = None
    for value in unit["SystemCallFilter"]:
        if value.startswith("~"):
            assert allowed is not None, "the first SystemCallFilter= line should be an allow list"
            allowed -= expand(value[1:].split(), groups)
        else:
            allowed = (allowed or expand(["@default"], groups)) | expand(value.split(), groups)
    assert allowed
    return allowed


def sandbox_spec(unit: dict[str, list[str]]) -> dict:
    assert unit["SystemCallArchitectures"] == ["native"]  # libseccomp's default: the native architecture only
    assert unit["NoNewPrivileges"] == ["yes"]  # libseccomp sets no_new_privs before loading a filter
    return {
        "uid": SANDBOX_UID,
        "umask": int(unit["UMask"][0], 8),
        "syscalls": sorted(allowed_syscalls(unit)),
        "errno": getattr(errno, unit["SystemCallErrorNumber"][0]),
        "families": [FAMILIES[name] for name in unit["RestrictAddressFamilies"][0].split()],
        "deny_write_execute": unit.get("MemoryDenyWriteExecute") == ["yes"],
    }


def mount_script(unit: dict[str, list[str]], staging: Path) -> str:
    """Mounts made in a private mount namespace before the sandboxed program starts."""
    hidden = []  # folders the unit replaces with empty ones
    if unit.get("ProtectHome") == ["yes"]:
        hidden += [h for h in ("/root", "/home") if Path(h).is_dir()]
    if unit.get("PrivateTmp") == ["yes"]:
        hidden += ["/tmp", "/var/tmp"]
    # This checkout, its venv and its Python may live in one of those (pyenv under /root, a CI clone under
    # /tmp): they are carried over, as if installed under /usr. (A real installation must not live there.)
    wanted = sorted({Path(sys.base_prefix), Path(sys.prefix), ROOT}, key=lambda p: len(p.parts))
    carried: list[Path] = []
    for path in wanted:
        if any(path.is_relative_to(h) for h in hidden) and not any(path.is_relative_to(c) for c in carried):
            carried.append(path)
    steps = []
    for n, path in enumerate(carried):
        steps += [f"mkdir -p {staging}/{n}", f"mount --bind {path} {staging}/{n}"]
    if unit.get("ProtectProc") == ["invisible"] or unit.get("ProcSubset") == ["pid"]:
        options = ["nosuid", "nodev", "noexec"]
        options += ["hidepid=invisible"] if unit.get("ProtectProc") == ["invisible"] else []
        options += ["subset=pid"] if unit.get("ProcSubset") == ["pid"] else []
        steps.append(f"mount -t proc -o {','.join(options)} proc /proc")
    if unit.get("ProtectHome") == ["yes"]:
        steps += [f"mount -t tmpfs -o mode=0755 tmpfs {h}" for h in ("/root", "/home") if Path(h).is_dir()]
    if unit.get("PrivateTmp") == ["yes"]:
        steps += ["mount -t tmpfs -o mode=1777 tmpfs /tmp", "mount -t tmpfs -o mode=1777 tmpfs /var/tmp"]
    for n, path in enumerate(carried):
        steps += [f"mkdir -p {path}", f"mount --move {staging}/{n} {path}", f"mount -o remount,bind,ro {path}"]
    if unit.get("ProtectSystem") == ["strict"]:  # last: mount(8) keeps notes under /run, on the root
        steps.append("mount -o remount,bind,ro /")  # /dev/shm, where the state lives here, is its own mount
    return " && ".join([*steps, 'exec "$@"'])


def sandboxed(command: list[str], unit: dict[str, list[str]], home: Path) -> list[str]:
    """`command` run as systemd would run it under `unit` (so far as reproduced here); `home` is the sandbox
    user's folder outside the read-only file system."""
    if os.geteuid() != 0:
        pytest.fail("the sandbox test needs root (a mount namespace, and a switch to an unprivileged user)")
    enter = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import tests.test_systemd as t; t.enter_sandbox()"
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount_script(unit, home / ".python"), "sh",
            sys.executable, "-c", enter, json.dumps(sandbox_spec(unit)), *command]  # fmt: skip


class _ArgCmp(ctypes.Structure):  # libseccomp's struct scmp_arg_cmp
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]


_ALLOW, _CMP_EQ, _CMP_GT, _CMP_MASKED_EQ = 0x7FFF0000, 4, 6, 7
_PROT_WRITE, _PROT_EXEC, _SHM_EXEC = 0x2, 0x4, 0o100000


def _seccomp_errno(number: int) -> int:
    return 0x00050000 | (number & 0xFFFF)


def enter_sandbox() -> None:
    """In the sandbox's mount namespace, as root: become nobody, load the filters, then exec the program.

    Run as `python -c ... SPEC_JSON PROGRAM ARGS...`. The filters are stacked as systemd stacks them: socket
    families, write+execute memory, then the allow list with the unit's errno for everything else.
    """
    spec = json.loads(sys.argv[1])
    os.setgroups([])
    os.setgid(spec["uid"])
    os.setuid(spec["uid"])  # from root to an ordinary user: every capability is dropped with it
    os.umask(spec["umask"])
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]  # fmt: skip
    lib.seccomp_load.argtypes = [ctypes.c_void_p]

    def load(default: int, rules: list[tuple[int, str, list[tuple[int, int, int, int]]]]) -> None:
        ctx = lib.seccomp_init(default)
        for action, name, conditions in rules:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:  # not a system call of this architecture (setuid32 and the like)
                continue
            args = (_ArgCmp * max(len(conditions), 1))(*[_ArgCmp(*c) for c in conditions])
            assert lib.seccomp_rule_add_array(ctx, action, number, len(conditions), args) == 0, name
        assert lib.seccomp_load(ctx) == 0, "seccomp_load failed"

    refused = [f for f in range(max(spec["families"])) if f not in spec["families"]]
    load(_ALLOW, [(_seccomp_errno(errno.EAFNOSUPPORT), "socket", [(0, _CMP_EQ, f, 0)]) for f in refused]
         + [(_seccomp_errno(errno.EAFNOSUPPORT), "socket", [(0, _CMP_GT, max(spec["families"]), 0)])])  # fmt: skip
    if spec["deny_write_execute"]:  # what systemd's MemoryDenyWriteExecute= filter refuses, with EPERM
        wx = _PROT_WRITE | _PROT_EXEC
        load(_ALLOW, [(_seccomp_errno(errno.EPERM), "mmap", [(2, _CMP_MASKED_EQ, wx, wx)]),
                      (_seccomp_errno(errno.EPERM), "mprotect", [(2, _CMP_MASKED_EQ, _PROT_EXEC, _PROT_EXEC)]),
                      (_seccomp_errno(errno.EPERM), "pkey_mprotect", [(2, _CMP_MASKED_EQ, _PROT_EXEC, _PROT_EXEC)]),
                      (_seccomp_errno(errno.EPERM), "shmat", [(2, _CMP_MASKED_EQ, _SHM_EXEC, _SHM_EXEC)])])  # fmt: skip
    # last, as systemd does: after it, loading another filter would be one of the refused calls
    load(_seccomp_errno(spec["errno"]), [(_ALLOW, name, []) for name in spec["syscalls"]])
    os.execv(sys.argv[2], sys.argv[2:])


PROBE = r"""
import errno, json, mmap, os, socket
found = {"uid": os.getuid(), "gid": os.getgid()}
def outcome(call):
    try:
        call()
        return "allowed"
    except OSError as err:
        return errno.errorcode[err.errno]
RW = mmap.PROT_READ | mmap.PROT_WRITE
found["mmap_write_execute"] = outcome(lambda: mmap.mmap(-1, 4096, prot=RW | mmap.PROT_EXEC))
found["mmap_write"] = outcome(lambda: mmap.mmap(-1, 4096, prot=RW))
found["netlink_socket"] = outcome(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW).close())
found["inet6_socket"] = outcome(lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close())
found["nice"] = outcome(lambda: os.setpriority(os.PRIO_PROCESS, 0, 5))
found["sched_setaffinity"] = outcome(lambda: os.sched_setaffinity(0, os.sched_getaffinity(0)))
with open("/tmp/probe", "w") as handle:
    found["private_tmp_writable"] = True
found["chown"] = outcome(lambda: os.chown("/tmp/probe", os.getuid(), os.getgid()))
found["umask"] = oct(os.stat("/tmp/probe").st_mode & 0o777)
found["root_read_only"] = bool(os.statvfs("/").f_flag & os.ST_RDONLY)
found["proc_meminfo"] = os.path.exists("/proc/meminfo")
found["proc_self"] = os.path.exists("/proc/self/status")
found["threads"] = __import__("polars").thread_pool_size()
print(json.dumps(found))
"""


def unit_environment(unit: dict[str, list[str]]) -> dict[str, str]:
    """The unit's Environment= assignments (unquoted NAME=value words)."""
    return dict(word.split("=", 1) for line in unit.get("Environment", []) for word in line.split())


def test_the_sandbox_bites(sandbox_home: Path, unit: dict[str, list[str]]) -> None:
    """A control for the next test: inside the sandbox, what the unit forbids fails and the rest works."""
    command = sandboxed([sys.executable, "-c", PROBE], unit, sandbox_home)
    environment = {**os.environ, **unit_environment(unit)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "uid": SANDBOX_UID, "gid": SANDBOX_UID,
        "mmap_write_execute": "EPERM", "mmap_write": "allowed",  # MemoryDenyWriteExecute
        "netlink_socket": "EAFNOSUPPORT", "inet6_socket": "allowed",  # RestrictAddressFamilies
        "nice": "allowed",  # lowering its own priority: setpriority is let back in after ~@resources
        "sched_setaffinity": "EPERM",  # ~@resources
        "chown": "EPERM",  # ~@privileged (@chown), even on its own file
        "private_tmp_writable": True, "umask": "0o640", "root_read_only": True,  # PrivateTmp, UMask, ProtectSystem
        "proc_meminfo": False, "proc_self": True,  # ProcSubset=pid
        "threads": os.cpu_count(),  # polars still sees every CPU without /proc/cpuinfo
    }  # fmt: skip


@pytest.fixture
def sandbox_home() -> Iterator[Path]:
    """A home the unprivileged sandbox user owns. /dev/shm, not tmp_path: pytest's base folder is root-only,
    and /dev/shm stays writable when the sandbox makes the root file system read-only (as under systemd)."""
    home = Path(tempfile.mkdtemp(prefix="rosterd-sandbox-", dir="/dev/shm"))
    os.chown(home, SANDBOX_UID, SANDBOX_UID)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            if (port := sock.getsockname()[1]) != 2222:
                return port


def log_events(log: Path) -> list[dict]:
    events = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return events


async def wait_for(condition, what: str, log: Path, process: subprocess.Popen, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := condition()) is not None:
            return value
        if process.poll() is not None:
            break
        await asyncio.sleep(0.2)
    pytest.fail(f"{what}: not within {timeout} s (exit status {process.poll()}); the daemon said:\n{log.read_text()}")


def latest_receipt(results: Path) -> dict | None:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((results / "latest.json").read_text())
    return None


async def test_daemon_serves_an_upload_inside_the_units_sandbox(sandbox_home: Path, unit: dict[str, list[str]]) -> None:
    """Host keys made, READY=1 sent to systemd, an SFTP upload validated by polars in a spawned worker, a
    snapshot written, the CERS dry-run delivery done by the outbox, and a clean stop on SIGTERM with
    STOPPING=1: all under the unit's restrictions."""
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    port = free_port()
    state = sandbox_home / "state"
    config = sandbox_home / "rosterd.toml"
    public_key = client_key.export_public_key().decode().strip()
    health = "[health]\nport = 0\n\n" if "health" in Settings.model_fields else ""  # never a fixed port here
    health += "[admin]\nport = 0\n\n" if "admin" in Settings.model_fields else ""
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nstate_dir = "{state}"\nmin_free_bytes = 0\n\n'
        f"[intake]\nsettle_seconds = 0.5\n\n{health}"
        f'[[tenants]]\nname = "north"\nauthorized_keys = ["{public_key}"]\n\n'
        '[[tenants.targets]]\ntype = "cers"\ndry_run = true\n'
    )
    os.chown(config, SANDBOX_UID, SANDBOX_UID)
    log = sandbox_home / "daemon.log"
    command = sandboxed([str(ROSTERD), "serve", "--config", str(config)], unit, sandbox_home)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # systemd's end of $NOTIFY_SOCKET
    notify.bind(str(sandbox_home / "notify"))
    os.chmod(sandbox_home / "notify", 0o666)  # sending to it takes write permission, and the daemon is nobody
    environment = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(sandbox_home),
                   "NOTIFY_SOCKET": str(sandbox_home / "notify"), "WATCHDOG_USEC": "60000000",
                   **unit_environment(unit)}  # fmt: skip
    with open(log, "wb") as out:  # noqa: ASYNC230 (the test owns the loop; nothing else waits on it)
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd="/",  # noqa: ASYNC220
                                   env=environment, start_new_session=True)  # fmt: skip
    try:
        await wait_for(lambda: next((e for e in log_events(log) if e.get("event") == "daemon.started"), None),
                       "daemon.started", log, process)  # fmt: skip
        async with (
            asyncssh.connect("127.0.0.1", port, username="north", client_keys=[client_key], known_hosts=None) as ssh,
            ssh.start_sftp_client() as sftp,
        ):
            await sftp.put(str(SAMPLE), "inbox/district.zip")
        results = state / "tenants" / "north" / "results"

        def delivered() -> dict | None:
            receipt = latest_receipt(results)
            if receipt and receipt["state"] != "accepted" and receipt["state"] not in ("received", "validating"):
                pytest.fail(f"the upload was not accepted: {json.dumps(receipt)[:2000]}")
            states = [d["state"] for d in (receipt or {}).get("deliveries") or []]
            return receipt if states == ["delivered"] else None

        receipt = await wait_for(delivered, "an accepted upload with its CERS dry run delivered", log, process)
        assert receipt["state"] == "accepted"
        assert list((results / "cers").glob("*.csv")), "the dry run wrote the group files"
        assert (state / "rosterd.db").stat().st_uid == SANDBOX_UID
        assert (state / "rosterd.db").stat().st_mode & 0o077 in (0, 0o040, 0o050), "UMask=0027 applies"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    assert status == 0, log.read_text()
    problems = [e for e in log_events(log) if e.get("level") in ("error", "critical")]
    assert problems == [], log.read_text()
    notify.setblocking(False)
    messages = []
    with contextlib.suppress(BlockingIOError), notify:
        while True:
            messages.append(notify.recv(4096).decode())
    assert any(m.startswith("READY=1\nSTATUS=listening on 127.0.0.1") for m in messages), messages
    assert "WATCHDOG=1" in messages and messages[-1] == "STOPPING=1", messages
