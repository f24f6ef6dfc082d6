"""The CERS student-group imports API over aiohttp: POST a group file, ask who the credential is.

CERS answers an upload it processed with HTTP 202 and a JSON import record whose `status` says what
happened: ACCEPTED (queued for processing), PROCESSED (the same bytes came before: nothing new to do) or
BAD_DATA (the whole file was refused; `message` lists `Row: r Failure: ...` lines). A 401 means the token was
refused: the client logs in afresh once and repeats the request. 403 means the credential may not write
groups. Each answer becomes a Sent with a verdict the target turns into a delivery outcome.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum

import aiohttp

from daemon.http import retry_after_seconds, shortened
from daemon.targets.cers.cognito import CognitoAuth, CognitoError
from daemon.targets.cers.settings import CersTarget

GOOD = ("ACCEPTED", "PROCESSED")


class Verdict(StrEnum):
    DONE = "done"
    RETRY = "retry"  # try again later: CERS or the network had trouble
    REFUSED = "refused"  # permanent: CERS refused the data or the credential


@dataclass(frozen=True, slots=True)
class Sent:
    verdict: Verdict
    error: str | None = None
    http_status: int | None = None
    record: dict | None = None  # the import record CERS returned
    retry_after: float | None = None


class CersClient:
    def __init__(self, settings: CersTarget, session: aiohttp.ClientSession, auth: CognitoAuth) -> None:
        self.settings = settings
        self.session = session
        self.auth = auth

    async def upload(self, name: str, data: bytes) -> Sent:
        """POST one group file as multipart/form-data, field `file`."""

        def form() -> aiohttp.FormData:
            body = aiohttp.FormData()
            body.add_field("file", data, filename=name, content_type="text/csv")
            return body

        sent = await self._call("POST", self.settings.imports_url, form)
        if sent.verdict is not Verdict.DONE or sent.record is None:
            return sent
        status = str(sent.record.get("status", ""))
        if status in GOOD:
            return sent
        message = str(sent.record.get("message") or "").strip()
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest().upper()
        detail = f"CERS answered {status or 'no status'} for {name} (import {sent.record.get('id')}, md5 {digest})"
        return Sent(Verdict.REFUSED, f"{detail}: {message}" if message else detail, sent.http_status, sent.record)

    async def whoami(self) -> Sent:
        """GET /imports/user: the identity and permissions CERS sees for the credential."""
        return await self._call("GET", self.settings.user_endpoint, None)

    async def _call(self, method: str, url: str, body) -> Sent:
        for fresh_login in (False, True):
            try:
                token = await (self.auth.relogin() if fresh_login else self.auth.token())
            except CognitoError as err:
                return Sent(Verdict.REFUSED if err.permanent else Verdict.RETRY, f"Cognito: {err}")
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
            try:
                async with self.session.request(method, url, data=body() if body else None, headers=headers,
                                                timeout=timeout) as response:  # fmt: skip
                    text = await response.text(errors="replace")
                    record = _json(text) if response.content_type == "application/json" else None
                    status, retry_after = response.status, retry_after_seconds(response.headers.get("Retry-After"))
            except (TimeoutError, asyncio.TimeoutError):
                return Sent(Verdict.RETRY, f"{method} {url}: no answer within {self.settings.timeout_seconds:g} s")
            except aiohttp.ClientError as err:
                return Sent(Verdict.RETRY, f"{method} {url}: {type(err).__name__}: {err}")
            if status == 401 and not fresh_login:
                continue  # the token was refused: one fresh login, then the same request again
            return _judge(method, url, status, text, record, retry_after, self.auth.username)
        raise AssertionError("unreachable")


def _judge(method: str, url: str, status: int, text: str, record, retry_after, user) -> Sent:
    where = f"{method} {url}"
    if status in (200, 202) and isinstance(record, dict):
        return Sent(Verdict.DONE, http_status=status, record=record)
    if status == 401:
        return Sent(Verdict.RETRY, f"{where}: 401, CERS refused even a freshly issued token for {user}", status)
    if status == 403:
        return Sent(Verdict.REFUSED, f"{where}: 403, the credential of {user} may not write student groups (CERS "
                    "needs GROUP_WRITE, given by the GROUP_ADMIN role, for these schools); the LEA's CAASPP "
                    "coordinator grants it in TOMS", status)  # fmt: skip
    if status == 429 or status >= 500:
        return Sent(Verdict.RETRY, f"{where}: HTTP {status} {shortened(text)}", status, retry_after=retry_after)
    if status in (200, 202):
        return Sent(Verdict.RETRY, f"{where}: HTTP {status} without a JSON import record: {shortened(text)}", status)
    return Sent(Verdict.REFUSED, f"{where}: HTTP {status} {shortened(text)}", status)


def _json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None
