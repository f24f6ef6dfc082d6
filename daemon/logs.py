"""Logging: structlog set up once, and the one vocabulary of events rosterd logs.

An event is a past-tense fact named `area.what_happened`; its details are keys from `KEYS`, spelled the same
everywhere, so `jq 'select(.tenant == "x")'` over the journal follows one tenant through every stage.
Output is one JSON object per line on stdout when stdout is not a terminal (journald, files, pipes) and
readable columns when it is. Records from the standard library's logging (asyncssh's, for instance) go
through the same processors, so they are JSON lines too and get the same redaction.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

REDACTED = "[redacted]"

EVENTS: dict[str, str] = {
    "daemon.started": "the daemon is listening and its stages run",
    "daemon.start_failed": "the daemon could not start (`reason`: a port or the state directory in use, ...); "
    "what had started was stopped again and it exits with status 1",
    "daemon.stopping": "a stop was asked for (SIGTERM or Ctrl-C); stages are being shut down",
    "daemon.stopped": "every stage is down (`elapsed_ms` since daemon.stopping; `left_behind`: the stages cut "
    "off at their time limit); the process exits",
    "daemon.stop_timed_out": "a stage (`stage`) had not stopped `seconds` into the stop: it was left behind",
    "daemon.not_ready": "a readiness check failed: intake cannot make progress (`reasons`); /readyz answers 503",
    "daemon.ready_again": "every readiness check passes again; /readyz answers 200",
    "hostkey.generated": "a host key was made and saved in the state directory (first start)",
    "hostkey.loaded": "an existing host key was read from the state directory; its fingerprint is logged",
    "hostkey.adopted": "a replica took the host key its cluster uses (`path`, `fingerprint`) in place of its own, "
    "and rewrote its file",
    "defender.sync_failed": "the shared store did not take or give the defender's failures and bans (`error`); "
    "tried again next round (logged at most once a minute)",
    "config.insecure_demo_tenant": "the demo tenant is configured: anyone with its generated key can log in",
    "config.insecure_demo_api_client": "the demo tenant's API client was made (`client`); its secret is kept in `path` for make run",
    "config.insecure_demo_admin": "the demo's console account was made (`account`); its password is kept in `path` for make run",
    "console.started": "the admin console listens (`host`, `port`, `tls`)",
    "console.login": "an account logged in to the console (`account`, `role`, `remote_ip`)",
    "console.login_failed": "a console login failed (`remote_ip`; `account` only when the name exists); the defender scored it",
    "console.login_refused": "a console login was not even checked (`reason`: the address is banned, or too many at once)",
    "console.logout": "an account logged out of the console (`account`, `remote_ip`)",
    "console.session_ended": "a console session ended before its time (`account`, `reason`: the account was disabled)",
    "console.refused": "a console request was refused (`status` 403 or 404, `reason`, `method`, `path`, `account`, `remote_ip`)",
    "console.action": "an action taken in the console (`action`, `account`, `role`, `remote_ip`, what it acted on, `outcome`)",
    "api.started": "the OneRoster API listens (`host`, `port`, `tls`)",
    "api.start_failed": "a reload added the first api target but the API could not listen (`reason`)",
    "api.request": "one API request answered (`client`, `tenant`, `target`, `method`, `path`, `status`, `rows`, `elapsed_ms`; never a token)",
    "api.failed": "an API request failed inside rosterd (`path`, `error`): answered 500 without the cause",
    "api.token_refused": "a token request was refused (`error`, the RFC 6749 code; `client` when it was given in the form)",
    "sftp.server_started": "the SFTP listener is up (`host_keys` has the fingerprints, `bans_in_force` the bans kept)",
    "sftp.login_succeeded": "a tenant authenticated (`method`: publickey or password)",
    "sftp.operation_refused": "a request outside what a tenant may do was refused (`op`, `reason`)",
    "sftp.idle_disconnected": "a connection without traffic for the idle timeout was closed",
    "sftp.session_opened": "a tenant logged in and an SFTP session started",
    "sftp.session_closed": "an SFTP session ended, for whatever reason",
    "sftp.login_failed": "an authentication attempt failed (unknown user, bad password or key, wrong network)",
    "sftp.limit_exceeded": "a session, size, quota or disk limit refused a request",
    "sftp.ip_banned": "the defender banned a source address for a while (`until`, `ban_seconds`, `ban_count`)",
    "sftp.connection_refused": "a banned address tried to connect and was dropped (logged once a minute)",
    "upload.received": "an uploaded file was taken from an inbox, hashed and recorded",
    "upload.aborted": "a transfer ended before a clean close; its partial file was removed",
    "upload.unconfirmed": "replicas: a completed upload could not be recorded in time, so its close (or rename) "
    "answered a failure and the client sends it again",
    "upload.validating": "validation of an upload started (in a worker process)",
    "upload.failed": "processing an upload failed inside rosterd (a bug, a disk error, a worker that died): tried again, "
    "or with `state` failed, given up (its receipt says why; the district did nothing wrong)",
    "upload.rejected": "validation rejected an upload; its receipt says why",
    "upload.accepted": "validation accepted an upload",
    "upload.duplicate": "an upload has the bytes of the tenant's current upload; nothing else happens",
    "snapshot.accepted": "an accepted upload became the tenant's current snapshot",
    "snapshot.pruned": "an old snapshot's files were removed (retention: `[snapshots] keep`)",
    "upload.held": "an upload's change set crossed a hold threshold; it waits for `rosterd approve` or `discard`",
    "upload.approved": "an administrator approved a held upload (`operator`, `at`); its snapshot is now current",
    "upload.discarded": "an administrator discarded a held upload (`operator`, `at`)",
    "upload.superseded": "a held upload was superseded by a newer accepted upload of the tenant",
    "upload.rediffed": "the tenant's current snapshot changed while an upload was diffed (an approval): diffed again",
    "upload.not_taken": "a file could not be moved out of an inbox (`error`); it stays there and is tried again",
    "upload.skipped": "an upload's turn was not taken here (`reason`): another replica processes it, or an older "
    "upload of the tenant is unfinished; looked at again by the next round",
    "upload.lease_lost": "another replica took over an upload this one was processing (its lease lapsed): this "
    "replica's outcome is not recorded",
    "results.refresh_failed": "a tenant's results/ could not be brought up to the shared storage's (`error`): "
    "the client was served what this replica has",
    "upload.lease_not_renewed": "renewing the lease on an upload being processed failed (`error`); tried again",
    "worker.died": "a worker process ended abruptly (`signal` or `exit_code`; `upload_id` if it was validating one)",
    "worker.stalled": "a worker's CPU time stood still during a validation, or it ran an hour (`seconds`, `reason`): it is hung, and is killed",
    "worker.pool_replaced": "the worker pool broke (a worker died) and a new one took its place",
    "worker.replace_failed": "no new worker pool could be made (`error`); the next validation tries again",
    "worker.burial_failed": "what ended a broken worker pool could not be found out (`error`); its calls are run again",
    "tenant.rebaseline_requested": "an administrator asked for the next upload to be taken as a fresh baseline "
    "(`operator`, `at`)",
    "config.reloaded": "SIGHUP: the config file was read again; its tenants and targets apply from now on",
    "config.reload_failed": "SIGHUP: the config file has problems (`problems`); nothing was changed",
    "config.restart_needed": "SIGHUP: these sections changed but apply only at the next start (`sections`)",
    "delivery.queued": "a delivery was queued by the day changing (a target whose scope moves classes by date)",
    "delivery.started": "an attempt of a delivery to a target began (`attempt`, `base_upload_id`)",
    "delivery.delivered": "a target took a delivery (CERS: ACCEPTED or PROCESSED; dry run: files written)",
    "delivery.failed": "an attempt of a delivery failed; it is retried at `next_attempt_at`",
    "delivery.dead": "a delivery was given up (refused by the target, or failing beyond `give_up_hours`)",
    "delivery.crashed": "a delivery attempt hit an error inside rosterd (a bug); it is retried",
    "delivery.resumed": "deliveries a stop or crash left in flight were queued again at start (`count`)",
    "delivery.skipped": "a delivery was not sent here (`reason`): another replica claimed or finished it first",
    "delivery.lease_lost": "another replica took over a delivery this one was sending (its lease lapsed): the "
    "attempt stopped and its outcome is not recorded",
    "delivery.lease_not_renewed": "renewing the lease on a delivery being sent failed (`error`); tried again",
    "delivery.replayed": "an administrator re-queued a delivery (`operator`, `at`)",
    "target.disabled": "a receiver answered 410 Gone: its deliveries wait until `rosterd enable-target`",
    "target.enabled": "an administrator enabled a disabled target again (`operator`, `at`)",
    "target.paused": "an administrator paused a target in the console: its deliveries wait (`operator`, `at`)",
}

KEYS: dict[str, str] = {
    "tenant": "tenant name",
    "upload_id": "the upload's id, as in its receipt",
    "sha256": "hex sha256 of the uploaded file",
    "remote_ip": "the client's source address",
    "session_id": "id of one SSH connection, shared by all its events",
    "bytes": "a size in bytes",
    "elapsed_ms": "how long something took, in milliseconds",
    "target": "a delivery target's name within its tenant",
    "delivery_id": "a delivery's id, as in `rosterd outbox`",
}

# Matched anywhere in a key, case-insensitively: `password_hash`, `api_token` and `Authorization` all count.
_SECRET_KEY = re.compile(r"password|passphrase|secret|token|private_?key|authorization", re.IGNORECASE)

_stdlib_handler: logging.Handler | None = None


def redact_secrets(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """Replace the value of every secret-named key, at any depth, with "[redacted]".

    A last line of defence: code should not log secrets in the first place.
    """
    return _redact_mapping(event)


def _redact_mapping(mapping: Mapping) -> dict:
    return {
        key: REDACTED if isinstance(key, str) and _SECRET_KEY.search(key) else _redact_value(value)
        for key, value in mapping.items()
    }


def _redact_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _redact_mapping(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(item) for item in value]
    return value


def configure_logging(json: bool | None = None, level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog (and route standard-library logging through it).

    `json` None chooses by the stream: JSON lines unless it is a terminal. `stream` defaults to stdout.
    """
    stream = stream or sys.stdout
    if json is None:
        json = not stream.isatty()
    levelno = logging.getLevelNamesMapping().get(level.upper())
    if levelno is None:
        raise ValueError(f"unknown log level {level!r}: one of debug, info, warning, error, critical")

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        redact_secrets,
    ]
    # Tracebacks without local variables: a local may hold exactly the secret the redaction is for.
    finish: list[Processor] = (
        [
            structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
            structlog.processors.JSONRenderer(),
        ]
        if json
        else [structlog.dev.ConsoleRenderer(colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback)]
    )
    structlog.configure(
        processors=[*shared, *finish],
        wrapper_class=structlog.make_filtering_bound_logger(levelno),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,  # configure_logging may run again (tests, reload)
    )
    _route_stdlib_logging(shared, finish[-1], stream, levelno)


def _route_stdlib_logging(shared: list[Processor], renderer: Processor, stream: TextIO, levelno: int) -> None:
    global _stdlib_handler
    root = logging.getLogger()
    if _stdlib_handler is not None:
        root.removeHandler(_stdlib_handler)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root.addHandler(handler)
    root.setLevel(levelno)
    # asyncssh narrates every connection at INFO; rosterd's own sftp.* events say what matters.
    logging.getLogger("asyncssh").setLevel(levelno if levelno <= logging.DEBUG else logging.WARNING)
    # watchfiles logs every batch of file changes at INFO; intake's upload.* events say what it did with them.
    logging.getLogger("watchfiles").setLevel(levelno if levelno <= logging.DEBUG else logging.WARNING)
    _stdlib_handler = handler


def get_logger(**context: Any) -> FilteringBoundLogger:
    """A logger with `context` (e.g. tenant=..., session_id=...) bound to every event it logs.

    It follows the configuration in force when it logs, so a module may create its logger at import time,
    before `configure_logging` runs.
    """
    return structlog.get_logger(**context)
