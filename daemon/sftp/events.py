"""What the SFTP layer tells the rest: one record per completed upload, and named security facts.

`UploadReceived` is the seam to the pipeline (like SFTPGo's upload hook payload: what the next stage
needs, nothing more). Other facts go out as `(name, fields)` through `on_event`, so a defender or the
structured logger can subscribe. Fields never carry a password or key material.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.names import TENANT_NAME

log = logging.getLogger(__name__)

# The event vocabulary: past-tense facts.
SERVER_STARTED = "sftp.server_started"  # with the host keys' fingerprints
HOSTKEY_GENERATED = "hostkey.generated"  # first start: a host key was made in the state directory
HOSTKEY_ADOPTED = "hostkey.adopted"  # a replica replaced its own host key with the one the cluster uses
DEFENDER_SYNC_FAILED = "defender.sync_failed"  # the store did not take or give the defender's evidence
LOGIN_FAILED = "sftp.login_failed"  # reason: unknown_user | bad_password | bad_key | network_refused
LOGIN_SUCCEEDED = "sftp.login_succeeded"
IP_BANNED = "sftp.ip_banned"  # the defender banned remote_ip until `until` (ban_seconds, ban_count)
CONNECTION_REFUSED = "sftp.connection_refused"  # reason: banned (logged at most once a minute per address)
# limit: max_auth_tries | max_sessions_per_ip | max_sessions_per_tenant | inbox_quota_bytes | min_free_bytes |
# max_handles_per_session | max_handles_per_tenant | max_open_uploads_per_tenant (these three once per session)
LIMIT_EXCEEDED = "sftp.limit_exceeded"
SESSION_OPENED = "sftp.session_opened"
SESSION_CLOSED = "sftp.session_closed"
IDLE_DISCONNECTED = "sftp.idle_disconnected"
OPERATION_REFUSED = "sftp.operation_refused"  # op, reason: path_escape | not_permitted | link | symlink_on_disk ...
# reason: client_gone | too_large | inbox_quota_bytes | min_free_bytes | write_failed | publish_failed | orphaned
UPLOAD_ABORTED = "upload.aborted"
UPLOAD_UNCONFIRMED = "upload.unconfirmed"  # replicas: a completed upload not recorded in time; its close failed



@dataclass(frozen=True)
class UploadReceived:
    tenant: str
    path: Path  # the final file in the tenant's inbox
    name: str
    size: int
    remote_ip: str
    session_id: str
    elapsed_ms: int


# Given a completed upload; may return an awaitable that says whether the upload was recorded (see
# ServerOptions.confirm_uploads)
OnUpload = Callable[[UploadReceived], Awaitable[bool] | None]
OnEvent = Callable[[str, dict[str, Any]], None]


class Reporter:
    """Calls the subscribers; a subscriber that raises is logged and never breaks a session."""

    def __init__(self, on_upload: OnUpload, on_event: OnEvent | None) -> None:
        self._on_upload = on_upload
        self._on_event = on_event

    def upload(self, record: UploadReceived) -> Awaitable[bool] | None:
        try:
            return self._on_upload(record)
        except Exception:
            log.exception("on_upload subscriber failed for %s", record.path)
            return None

    def event(self, event: str, /, **fields: Any) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event, fields)
        except Exception:
            log.exception("on_event subscriber failed for %s", event)


def shown_username(username: str) -> str:
    """The name as logged for a failed login: as typed when it could be a tenant name, else a digest.

    A password typed into the user-name field is the usual way one reaches a log; tenant names are short
    lowercase words, so anything else is logged as `?sha256:<12 hex>`, which still lets an operator see
    that the same wrong name keeps coming back.
    """
    if TENANT_NAME.fullmatch(username):
        return username
    return "?sha256:" + hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()[:12]
