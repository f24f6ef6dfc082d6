"""Licence targets' settings: which part of the roster a vendor gets (scope), when it may be sent (window),
and how (a signed webhook, a OneRoster zip pushed to the vendor's SFTP server, or a OneRoster REST API the
vendor pulls from).

Each is a `[[tenants.targets]]` table with `type = "webhook"`, `type = "sftp"` or `type = "api"`;
config/rosterd.example.toml documents every key. An api target shares the scope rule but has no window: nothing
is sent to it, so there is nothing to hold back; the vendor asks when it likes (the scope's class date window
still applies, on the day of each request). Secrets (the webhook signing secret, the SFTP password or private key) are never in the
TOML: each is read at the time of use from a systemd credential, an environment variable or a file.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from daemon.names import check_target_name
from daemon.targets.secrets import SecretSource

_WINDOW = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scope(_Section):
    """The part of the tenant's roster a target gets; an empty list does not narrow anything."""

    orgs: list[str] = []  # schools (or districts) by sourcedId or identifier (e.g. an NCES id); their classes
    roles: list[str] = []  # user roles kept, e.g. ["student", "teacher"]
    email_domains: list[str] = []  # users whose e-mail is outside these domains are left out (and counted)
    courses: list[str] = []  # classes of these courses only (course sourcedId or courseCode)
    subjects: list[str] = []  # classes with one of these subjects only (SCED title or code, class or course)
    # course sourcedId, courseCode or subject -> the licence (or pool) carried with each class and enrollment
    licences: dict[str, str] = {}
    class_start_days: int | None = Field(None, ge=0)  # classes starting more than N days ahead wait until then
    class_end_days: int | None = Field(None, ge=0)  # classes that ended more than N days ago are removed


class Window(_Section):
    """When deliveries may go out: an optional daily window in a named time zone, and a pause switch."""

    daily: str | None = None  # "HH:MM-HH:MM", e.g. "00:00-02:00"; may wrap past midnight ("22:00-02:00")
    time_zone: str = "UTC"  # an IANA name such as "America/Los_Angeles"
    paused: bool = False  # true: deliveries wait in the outbox until it is false again (then `rosterd reload`)

    @field_validator("daily")
    @classmethod
    def _daily(cls, value: str | None) -> str | None:
        if value is None:
            return value
        found = _WINDOW.match(value)
        if not found or int(found[1]) > 23 or int(found[3]) > 23 or int(found[2]) > 59 or int(found[4]) > 59:
            raise ValueError(f"{value!r}: write the window as HH:MM-HH:MM, e.g. \"00:00-02:00\"")
        if (found[1], found[2]) == (found[3], found[4]):
            raise ValueError(f"{value!r}: the window is empty (start equals end)")
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone name such as \"America/Los_Angeles\"") from None
        return value

    def next_open(self, now: datetime) -> datetime | None:
        """None when a delivery may go at `now` (aware, any zone); else when the window next opens. A paused
        target is never open: `datetime.max` in UTC."""
        if self.paused:
            return datetime.max.replace(tzinfo=ZoneInfo("UTC"))
        if self.daily is None:
            return None
        found = _WINDOW.match(self.daily)
        assert found is not None
        start, end = time(int(found[1]), int(found[2])), time(int(found[3]), int(found[4]))
        local = now.astimezone(ZoneInfo(self.time_zone))
        clock = local.time()
        inside = start <= clock < end if start < end else (clock >= start or clock < end)
        if inside:
            return None
        opens = datetime.combine(local.date(), start, tzinfo=local.tzinfo)
        if opens <= local:
            opens = datetime.combine(local.date() + timedelta(days=1), start, tzinfo=local.tzinfo)
        return opens


class _ScopedTarget(_Section):
    """What every licence target has: a name, and the part of the roster the vendor gets."""

    name: str
    scope: Scope = Scope()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_target_name(value)


class _LicenceTarget(_ScopedTarget):
    """A target rosterd sends to (through the outbox): when it may be sent, and how long a send may take."""

    window: Window = Window()
    timeout_seconds: float = Field(30.0, gt=0)


class WebhookSecret(SecretSource):
    """The signing secret (Standard Webhooks: `whsec_` + base64, or any string of 24 bytes or more)."""


class WebhookTarget(_LicenceTarget):
    type: Literal["webhook"]
    url: str  # where batches are POSTed (https:// unless the host is loopback)
    batch_size: int = Field(1000, ge=1, le=10_000)  # events per request
    signing: WebhookSecret = WebhookSecret()

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https://[^/\s]+", value) and not re.match(r"^http://(127\.0\.0\.1|localhost|\[::1\])[:/]",
                                                                       value):  # fmt: skip
            raise ValueError(f"{value!r}: a webhook URL is https:// (plain http only to this machine)")
        return value

    @model_validator(mode="after")
    def _signed(self) -> WebhookTarget:
        if self.signing.secret_source is None:
            raise ValueError("a webhook target needs signing.secret_credential, secret_env or secret_file")
        return self


class SftpAuth(SecretSource):
    """The vendor's SFTP login: a private key file (`key_file`) or a password from the secret source."""

    username: str
    key_file: Path | None = None  # an OpenSSH private key (unencrypted, mode 600), for key authentication


class SftpTarget(_LicenceTarget):
    type: Literal["sftp"]
    host: str
    port: int = Field(22, ge=1, le=65535)
    host_key: str  # the vendor's host public key line (pinned: any other key is refused)
    auth: SftpAuth
    remote_dir: str = "."  # where the zip goes on the vendor's server
    file_name: str = "{tenant}-{upload_id}.zip"  # template: {tenant}, {upload_id}, {target}
    version: Literal["1.1", "1.2"] = "1.1"  # the OneRoster version the vendor takes
    mode: Literal["bulk", "delta"] = "bulk"  # the whole scoped roster, or only the scoped changes

    @model_validator(mode="after")
    def _can_log_in(self) -> SftpTarget:
        if self.auth.key_file is None and self.auth.secret_source is None:
            raise ValueError("an sftp target needs auth.key_file or a password (auth.secret_credential, "
                             "secret_env or secret_file)")  # fmt: skip
        return self


class RateLimit(_Section):
    """Requests each API client may make: a token bucket refilled at `requests_per_second`, holding `burst`."""

    requests_per_second: float = Field(20.0, gt=0)  # the steady rate; more gets 429 with Retry-After
    burst: int = Field(40, ge=1)  # requests a client may make at once after a quiet spell


class ApiTarget(_ScopedTarget):
    """A OneRoster REST API the vendor pulls its scoped roster from (issue 15), with clients made by
    `rosterd api-client add`. Nothing is delivered to it: the outbox queues nothing for an api target."""

    type: Literal["api"]
    versions: list[Literal["1.1", "1.2"]] = ["1.1", "1.2"]  # served under /ims/oneroster/v1p1 and /rostering/v1p2
    token_seconds: int = Field(3600, ge=60, le=86_400)  # how long an access token lasts (expires_in)
    tobedeleted_days: int = Field(30, ge=0, le=3650)  # a record that left the roster (or scope) stays this long
    rate_limit: RateLimit = RateLimit()  # per client

    @field_validator("versions")
    @classmethod
    def _versions(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError('name at least one version: ["1.1"], ["1.2"] or ["1.1", "1.2"]')
        if len(set(value)) != len(value):
            raise ValueError(f"a version is listed twice: {value}")
        return value


MAX_LIMIT = 5000  # the least maximum a provider may have: SDS asks for pages of 5000


class ApiConfig(BaseModel):
    """[api]: where the OneRoster API listens. It is served only when some tenant has an api target."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"  # loopback: production puts a TLS proxy in front, or sets tls_cert and tls_key
    port: int = Field(9080, ge=0, le=65535)  # 0: any free port (tests)
    tls_cert: Path | None = None  # PEM certificate chain; with tls_key, the API speaks HTTPS itself
    tls_key: Path | None = None
    public_url: str | None = None  # the scheme://host[:port] hrefs start with; default: the request's own
    max_limit: int = Field(MAX_LIMIT, ge=MAX_LIMIT)  # the largest page; a larger `limit` is clamped to it
    threads: int = Field(4, ge=1, le=64)  # threads reading pages

    def origin(self) -> str:
        """What hrefs start with when the request's own name does not say otherwise (publications are made
        with it, and a request by another name gets its own)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"{'https' if self.tls_cert else 'http'}://{self.host}:{self.port}"

    @model_validator(mode="after")
    def _both_or_neither(self) -> ApiConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both tls_cert and tls_key, or neither")
        return self
