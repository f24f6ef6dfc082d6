"""Logging: JSON lines with the standard keys, console output on a terminal, secrets redacted at any depth."""

from __future__ import annotations

import io
import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from daemon import logs
from daemon.logs import EVENTS, KEYS, REDACTED, configure_logging, get_logger


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    asyncssh_level = logging.getLogger("asyncssh").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("asyncssh").setLevel(asyncssh_level)
    logs._stdlib_handler = None
    structlog.reset_defaults()


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_output_is_one_object_per_line_with_the_standard_keys() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    log = get_logger(tenant="district-7", session_id="s1")
    log.info("upload.received", upload_id="u1", sha256="ab" * 32, bytes=1234, remote_ip="192.0.2.9")
    log.warning("upload.rejected", upload_id="u1", elapsed_ms=87)

    first, second = json_lines(out)
    assert first["event"] == "upload.received" and first["level"] == "info"
    assert {k: first[k] for k in ("tenant", "session_id", "upload_id", "bytes", "remote_ip")} == {
        "tenant": "district-7", "session_id": "s1", "upload_id": "u1", "bytes": 1234, "remote_ip": "192.0.2.9"
    }  # fmt: skip
    stamp = datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00"))
    assert first["timestamp"].endswith("Z") and stamp.utcoffset() == UTC.utcoffset(None)
    assert second["event"] == "upload.rejected" and second["level"] == "warning" and second["elapsed_ms"] == 87


def test_a_stream_that_is_not_a_terminal_gets_json_and_a_terminal_gets_columns() -> None:
    pipe, tty = io.StringIO(), Terminal()
    configure_logging(stream=pipe)
    get_logger().info("daemon.started", port=2222)
    assert json_lines(pipe)[0]["port"] == 2222

    configure_logging(stream=tty)
    get_logger().info("daemon.started", port=2222)
    assert "\x1b[" in tty.getvalue()  # coloured for a person
    plain = re.sub(r"\x1b\[[0-9;]*m", "", tty.getvalue())
    assert "daemon.started" in plain and "port=2222" in plain
    with pytest.raises(json.JSONDecodeError):
        json.loads(plain)


def test_console_output_when_forced() -> None:
    out = io.StringIO()
    configure_logging(json=False, stream=out)
    get_logger(tenant="demo").info("sftp.session_opened", remote_ip="127.0.0.1", password="pw-123")
    line = out.getvalue().strip()
    assert re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z \[info\s*\] sftp\.session_opened", line)
    assert "tenant=demo" in line and "remote_ip=127.0.0.1" in line
    assert "pw-123" not in line and f"password={REDACTED}" in line
    assert "\x1b[" not in line  # no colour codes when the stream is not a terminal


def test_secrets_are_redacted_at_any_depth_without_touching_the_callers_data() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    request = {"headers": {"Authorization": "Bearer abc.def", "Accept": "*/*"}, "body": [{"client_secret": "s3"}]}
    get_logger().info(
        "delivery.failed",
        tenant="t",
        password="hunter2",
        passphrase="open sesame",
        api_token="tok-1",
        private_key="-----BEGIN",
        password_hash="$argon2id$v=19$x",
        request=request,
        targets=({"name": "cers", "token": "tok-2"},),
    )
    (event,) = json_lines(out)
    for key in ("password", "passphrase", "api_token", "private_key", "password_hash"):
        assert event[key] == REDACTED
    assert event["request"] == {
        "headers": {"Authorization": REDACTED, "Accept": "*/*"},
        "body": [{"client_secret": REDACTED}],
    }
    assert event["targets"] == [{"name": "cers", "token": REDACTED}]
    assert event["tenant"] == "t"
    for secret in ("hunter2", "open sesame", "tok-1", "tok-2", "abc.def", "s3", "BEGIN", "argon2id"):
        assert secret not in out.getvalue()
    assert request["headers"]["Authorization"] == "Bearer abc.def"


def test_tracebacks_carry_no_local_variables() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    password = "in-a-local-only"  # noqa: F841 - the point is that tracebacks must not show it
    try:
        raise RuntimeError("target refused")
    except RuntimeError:
        get_logger().exception("delivery.failed", tenant="t")
    (event,) = json_lines(out)
    assert event["exception"][0]["exc_value"] == "target refused"
    assert "in-a-local-only" not in out.getvalue()


def test_standard_library_records_become_json_lines_and_asyncssh_chatter_is_quiet() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    logging.getLogger("asyncssh").info("Accepted SSH client connection")
    logging.getLogger("asyncssh").warning("Connection lost")
    logging.getLogger("somelib").info("cache %s", "warmed")
    events = json_lines(out)
    assert [(e["logger"], e["level"], e["event"]) for e in events] == [
        ("asyncssh", "warning", "Connection lost"),
        ("somelib", "info", "cache warmed"),
    ]
    assert all(e["timestamp"].endswith("Z") for e in events)


def test_level_filters_and_reconfiguring_reaches_loggers_made_before() -> None:
    early = get_logger(tenant="t")
    out = io.StringIO()
    configure_logging(json=True, level="warning", stream=out)
    early.info("upload.accepted")
    early.error("delivery.failed")
    assert [e["event"] for e in json_lines(out)] == ["delivery.failed"]
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging(level="loud")


def test_configuring_twice_does_not_duplicate_standard_library_lines() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    configure_logging(json=True, stream=out)
    logging.getLogger("somelib").warning("once")
    assert len(json_lines(out)) == 1


def test_the_vocabulary_is_past_tense_dotted_names_with_the_standard_keys() -> None:
    for name, meaning in EVENTS.items():
        assert re.fullmatch(r"[a-z]+\.[a-z_]+", name) and meaning
    assert {
        "daemon.started", "daemon.stopping", "sftp.session_opened", "sftp.session_closed", "sftp.login_failed",
        "sftp.limit_exceeded", "sftp.ip_banned", "upload.received", "upload.aborted", "upload.rejected",
        "upload.accepted", "upload.duplicate", "snapshot.accepted", "delivery.failed",
        "config.insecure_demo_tenant", "hostkey.generated", "hostkey.loaded",
    } <= set(EVENTS)  # fmt: skip
    assert set(KEYS) >= {"tenant", "upload_id", "sha256", "remote_ip", "session_id", "bytes", "elapsed_ms"}


def test_every_event_the_code_logs_is_in_the_vocabulary() -> None:
    """Event names written in the code (log calls, the SFTP layer's constants) and one per upload state."""
    import daemon
    from daemon.sftp import events
    from daemon.store import State

    source = "\n".join(p.read_text() for p in Path(daemon.__file__).parent.rglob("*.py"))
    logged = set(re.findall(r"\.(?:info|warning|error|exception|log)\(\s*\"([a-z_]+\.[a-z_]+)\"", source))
    constants = {v for k, v in vars(events).items() if k.isupper() and isinstance(v, str) and "." in v}
    states = {f"upload.{state}" for state in State}
    assert logged and constants and (logged | constants | states) - set(EVENTS) == set()
