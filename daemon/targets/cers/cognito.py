"""The bearer token CERS accepts: Cognito's InitiateAuth over the AWS JSON protocol, kept and refreshed.

CERS takes the credential of CAASPP's Student Score Reports: a TOMS username and "secret key" (valid 365 days),
exchanged at Cognito for tokens with USER_PASSWORD_AUTH. One `CognitoAuth` per credential keeps the tokens,
refreshes them with REFRESH_TOKEN_AUTH shortly before they expire, and logs in with the secret again when a refresh
is refused. The secret is read at each login and kept nowhere, so an operator can replace it without a restart.

Failures are `CognitoError`s: `permanent` when the credential or the configuration is refused (someone has to act),
transient otherwise (the caller retries later). Nothing is logged here; the caller logs the delivery's outcome.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from daemon.targets.cers.settings import CognitoSettings, SecretMissing

INITIATE_AUTH = "AWSCognitoIdentityProviderService.InitiateAuth"
AMZ_JSON = "application/x-amz-json-1.1"
_HEADERS = {"X-Amz-Target": INITIATE_AUTH, "Content-Type": AMZ_JSON, "Accept": AMZ_JSON}
_DEFAULT_LIFETIME = 3600  # Cognito's usual token lifetime, when an answer names none

# Cognito's rate limits and its own faults pass; any other refusal of a request stays until someone acts.
_TRANSIENT_CODES = frozenset(
    {"TooManyRequestsException", "LimitExceededException", "ThrottlingException", "InternalErrorException"}
)
_TRANSIENT_STATUSES = frozenset({408, 429})

_ADVICE = {
    "NotAuthorizedException": (
        "Check the secret key in TOMS (it expires after 365 days, and regenerating it replaces the old one) "
        "and put the current one in {source}"
    ),
    "UserNotFoundException": "Check cognito.username: it is the SIS vendor username from TOMS",
    "PasswordResetRequiredException": "Regenerate the secret key in TOMS and put it in {source}",
    "UserNotConfirmedException": "The TOMS credential is not active yet: ask the LEA CAASPP coordinator",
    "ResourceNotFoundException": "Check cognito.client_id and cognito.region (or cognito.endpoint_url)",
    "InvalidParameterException": "Check cognito.client_id, cognito.username and the secret key's source",
}
_DEFAULT_ADVICE = "Check the [tenants.targets.cognito] settings and the secret key in TOMS"


class CognitoError(Exception):
    """Cognito gave no token. `code` is the AWS error type (no namespace), or network, timeout, secret, response.

    `permanent` means retrying will not help until someone changes the credential or the configuration.
    """

    def __init__(self, message: str, *, code: str, permanent: bool) -> None:
        super().__init__(message)
        self.code = code
        self.permanent = permanent

    def __repr__(self) -> str:
        return f"CognitoError(code={self.code!r}, permanent={self.permanent}, message={str(self)!r})"


@dataclasses.dataclass(frozen=True, repr=False)
class _Tokens:
    bearer: str  # the IdToken or AccessToken, as settings.token says
    refresh: str | None
    refresh_at: float  # clock readings
    expires_at: float
    claims: dict[str, Any]

    def __repr__(self) -> str:
        return f"_Tokens(expires_at={self.expires_at}, refreshable={self.refresh is not None})"


class CognitoAuth:
    """The bearer token for one Cognito credential; callers share it, and one login, through a lock."""

    def __init__(
        self,
        settings: CognitoSettings,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.monotonic,
        timeout_seconds: float = 30.0,
    ) -> None:
        self._settings = settings
        self._session = session
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._lock = asyncio.Lock()
        self._tokens: _Tokens | None = None
        self._logins = 0  # password logins so far; lets concurrent relogin() calls share one

    def __repr__(self) -> str:
        return (
            f"CognitoAuth(url={self._settings.url!r}, client_id={self._settings.client_id!r}, "
            f"username={self._settings.username!r}, token={self._settings.token!r}, "
            f"logged_in={self._tokens is not None})"
        )

    @property
    def username(self) -> str | None:
        """The user the current token names (for messages); None before the first login."""
        if self._tokens is None:
            return None
        claims = self._tokens.claims
        name = claims.get("cognito:username") or claims.get("username")
        return name if isinstance(name, str) else None

    async def token(self) -> str:
        """The bearer token: logged in at first use, refreshed within refresh_margin_seconds of expiry."""
        async with self._lock:
            tokens = self._tokens
            if tokens is None:
                tokens = await self._login()
            elif self._clock() >= tokens.refresh_at:
                tokens = await self._refreshed(tokens)
            self._tokens = tokens
            return tokens.bearer

    async def relogin(self) -> str:
        """Drop the tokens and log in with the secret (after CERS answered 401 to the current token)."""
        logins_seen = self._logins
        async with self._lock:
            if self._tokens is not None and self._logins != logins_seen:
                return self._tokens.bearer  # another caller logged in afresh while this one waited
            self._tokens = None
            self._tokens = await self._login()
            return self._tokens.bearer

    async def _refreshed(self, tokens: _Tokens) -> _Tokens:
        if tokens.refresh is None:
            return await self._login()
        try:
            return await self._refresh(tokens.refresh)
        except CognitoError as err:
            if err.permanent:  # the refresh token was revoked or has expired: the secret may still be good
                return await self._login()
            if self._clock() < tokens.expires_at:
                return tokens  # Cognito is unreachable for now, and the token still works a while
            raise

    async def _login(self) -> _Tokens:
        user = self._settings.username
        try:
            secret = self._settings.read_secret()
        except SecretMissing as err:
            raise CognitoError(
                f"Cannot read the Cognito secret key for user {user}: {err}. Put the secret key from TOMS there",
                code="secret",
                permanent=True,
            ) from None
        parameters = {"USERNAME": user, "PASSWORD": secret}
        tokens = await self._initiate_auth("USER_PASSWORD_AUTH", parameters, secret=secret, refresh_token=None)
        self._logins += 1
        return tokens

    async def _refresh(self, refresh_token: str) -> _Tokens:
        parameters = {"REFRESH_TOKEN": refresh_token}
        return await self._initiate_auth("REFRESH_TOKEN_AUTH", parameters, secret=None, refresh_token=refresh_token)

    async def _initiate_auth(
        self, flow: str, parameters: dict[str, str], *, secret: str | None, refresh_token: str | None
    ) -> _Tokens:
        """One InitiateAuth call. `refresh_token` is kept when the answer brings none (a refresh's answer)."""
        action = "login" if flow == "USER_PASSWORD_AUTH" else "token refresh"
        body = json.dumps({"AuthFlow": flow, "ClientId": self._settings.client_id, "AuthParameters": parameters})
        started = self._clock()
        status, raw = await self._post(body.encode())
        answer = _json_object(raw)
        if status >= 300:
            raise _scrubbed(self._refusal(action, status, answer), secret)
        if answer is None:
            raise self._unusable(action, f"an answer that is not JSON (HTTP {status})")
        if answer.get("ChallengeName"):
            challenge = str(answer["ChallengeName"])
            raise CognitoError(
                f"Cognito asks user {self._settings.username} to answer the {challenge} challenge instead of "
                f"issuing a token: the secret key needs attention. Regenerate it in TOMS and put it in "
                f"{self._settings.secret_source}",
                code=challenge,
                permanent=True,
            )
        result = answer.get("AuthenticationResult")
        kind = "IdToken" if self._settings.token == "id" else "AccessToken"
        bearer = result.get(kind) if isinstance(result, dict) else None
        if not isinstance(bearer, str) or not bearer:
            raise self._unusable(action, f"an answer without AuthenticationResult.{kind}")
        claims = _unverified_claims(bearer)
        expires_at = started + _lifetime(result.get("ExpiresIn"), claims)
        return _Tokens(
            bearer=bearer,
            refresh=result.get("RefreshToken") or refresh_token,
            refresh_at=expires_at - self._settings.refresh_margin_seconds,
            expires_at=expires_at,
            claims=claims,
        )

    async def _post(self, body: bytes) -> tuple[int, bytes]:
        url = self._settings.url
        try:
            async with self._session.post(
                url, data=body, headers=_HEADERS, timeout=self._timeout, raise_for_status=False
            ) as response:
                return response.status, await response.read()
        except TimeoutError:
            raise CognitoError(
                f"Cognito at {url} did not answer within {self._timeout.total:g} s. It is tried again later; "
                f"if this persists, check the network path to it",
                code="timeout",
                permanent=False,
            ) from None
        except aiohttp.ClientError as err:
            raise CognitoError(
                f"Cognito at {url} could not be reached: {err}. It is tried again later; if this persists, check "
                f"the network path to it (DNS, proxy, firewall) and cognito.region or cognito.endpoint_url",
                code="network",
                permanent=False,
            ) from None

    def _refusal(self, action: str, status: int, answer: dict[str, Any] | None) -> CognitoError:
        user = self._settings.username
        if answer is None or not isinstance(answer.get("__type"), str):
            transient = status >= 500 or status in _TRANSIENT_STATUSES
            return CognitoError(
                f"Cognito answered the {action} for user {user} with HTTP {status} and no AWS error. "
                + ("It is tried again later" if transient else f"Check cognito.endpoint_url ({self._settings.url})"),
                code="response",
                permanent=not transient,
            )
        code = _error_code(answer["__type"])
        detail = answer.get("message") or answer.get("Message") or ""
        said = f"{code}: {str(detail).rstrip('.')}" if detail else code
        if status >= 500 or code in _TRANSIENT_CODES:
            return CognitoError(
                f"Cognito could not take the {action} for user {user} now ({said}, HTTP {status}). "
                f"It is tried again later",
                code=code,
                permanent=False,
            )
        advice = _ADVICE.get(code, _DEFAULT_ADVICE).format(source=self._settings.secret_source)
        message = f"Cognito refused the credential for user {user}: {said}. {advice}"
        return CognitoError(message, code=code, permanent=True)

    def _unusable(self, action: str, what: str) -> CognitoError:
        return CognitoError(
            f"Cognito gave {what} to the {action} for user {self._settings.username}. "
            f"Check cognito.endpoint_url ({self._settings.url})",
            code="response",
            permanent=True,
        )


def _scrubbed(err: CognitoError, secret: str | None) -> CognitoError:
    """The error again with the secret blanked out, should anything have echoed it."""
    text = str(err)
    if not secret or secret not in text:
        return err
    return CognitoError(text.replace(secret, "[redacted]"), code=err.code, permanent=err.permanent)


def _error_code(aws_type: str) -> str:
    """`com.amazonaws...#NotAuthorizedException` or `NotAuthorizedException:http://...` -> NotAuthorizedException."""
    return aws_type.rpartition("#")[2].partition(":")[0] or aws_type


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _unverified_claims(token: str) -> dict[str, Any]:
    """The JWT's payload, unchecked: only for names in messages and a lifetime when ExpiresIn is missing."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return {}
    return claims if isinstance(claims, dict) else {}


def _lifetime(expires_in: Any, claims: dict[str, Any]) -> float:
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
        return float(expires_in)
    issued, expires = claims.get("iat"), claims.get("exp")
    if isinstance(issued, int | float) and isinstance(expires, int | float) and expires > issued:
        return float(expires - issued)
    return float(_DEFAULT_LIFETIME)
