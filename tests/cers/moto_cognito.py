"""Cognito for the CERS tests: moto in server mode on a free loopback port, with one pool, app client and user.

`moto_server()` runs moto's ThreadedMotoServer on 127.0.0.1 (port 0, so parallel runs never collide);
`cognito_pool(endpoint_url, folder)` creates a user pool, an app client allowing USER_PASSWORD_AUTH and
REFRESH_TOKEN_AUTH, and a confirmed user with a permanent password, yields a `MotoCognito` and deletes the pool at
exit. `running_cognito(folder)` is both at once. The `cognito` fixture shares one server per test session (stopping
one takes half a second) and gives each test a pool of its own.

Hermetic: boto3 gets dummy keys, the region and the loopback endpoint as arguments, so it never looks for real
credentials or leaves the machine. (The `cognito` fixture in conftest.py also hides AWS_PROFILE and the AWS
config files, in case a developer's settings name a profile that does not exist here.)

The secret reaches `CognitoSettings` through a file (mode 600) in `folder`: a file leaves the environment alone
and also works for a daemon started as a subprocess. `settings(secret_env=...)` or `settings(secret_credential=...)`
replace it; the test then provides the secret itself (`cognito.secret`).

`verify` is what the fake CERS server checks bearer tokens with: the signature against the pool's JWKS (as moto
serves it), the issuer, the app client, `exp` and `token_use`. Setting `verify.reject_issued_before` (or calling
`verify.reject_issued_so_far()`) makes it refuse older tokens, as CERS does with an expired or revoked one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import secrets
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from moto.server import ThreadedMotoServer

from daemon.targets.cers.settings import CognitoSettings

REGION = "us-west-2"
USERNAME = "sis-vendor-lea-0123"
_DUMMY_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclasses.dataclass
class TokenVerifier:
    """A callable token -> username (None when refused), as CERS would judge a Cognito bearer token.

    `last_rejection` says why the last token was refused, for a failing test's message.
    """

    keys: KeySet
    issuer: str
    client_id: str
    token_use: frozenset[str] = frozenset({"id", "access"})
    reject_issued_before: float | None = None  # compared with `iat`, which Cognito gives in whole seconds
    last_rejection: str | None = None

    def __call__(self, token: str) -> str | None:
        try:
            claims = jwt.decode(token, self.keys, algorithms=["RS256"]).claims
        except (JoseError, ValueError) as err:
            return self._refuse(f"not a JWT signed by the pool: {err!r}")
        problem = self._problem(claims)
        if problem:
            return self._refuse(problem)
        self.last_rejection = None
        name = claims.get("cognito:username") or claims.get("username")
        return name if isinstance(name, str) else self._refuse("no cognito:username or username claim")

    def reject_issued_so_far(self) -> None:
        """Refuse every token issued until now, and none issued later (waits for the next whole second, < 1 s)."""
        boundary = math.floor(time.time()) + 1
        time.sleep(max(0.0, boundary - time.time()))
        self.reject_issued_before = boundary

    def _problem(self, claims: dict[str, Any]) -> str | None:
        use = claims.get("token_use")
        if use not in self.token_use:
            return f"token_use {use!r} is not one of {sorted(self.token_use)}"
        if claims.get("iss") != self.issuer:
            return f"issuer {claims.get('iss')!r} is not {self.issuer!r}"
        audience = claims.get("aud") if use == "id" else claims.get("client_id")
        if audience != self.client_id:
            return f"issued to app client {audience!r}, not {self.client_id!r}"
        expires = claims.get("exp")
        if not isinstance(expires, int | float) or expires <= time.time():
            return f"expired (exp {expires!r})"
        issued = claims.get("iat")
        if self.reject_issued_before is not None and (
            not isinstance(issued, int | float) or issued < self.reject_issued_before
        ):
            return f"issued at {issued!r}, before {self.reject_issued_before}"
        return None

    def _refuse(self, reason: str) -> None:
        self.last_rejection = reason
        return None


@dataclasses.dataclass
class MotoCognito:
    endpoint_url: str
    region: str
    pool_id: str
    client_id: str
    username: str
    secret: str
    secret_file: Path
    verify: TokenVerifier
    idp: Any  # a boto3 cognito-idp client on the server, for tests that change the pool (sign-outs, more users)

    def settings(self, **overrides: Any) -> CognitoSettings:
        """CognitoSettings for this pool and user, the secret read from `secret_file` unless overridden."""
        values: dict[str, Any] = {
            "region": self.region,
            "client_id": self.client_id,
            "username": self.username,
            "endpoint_url": self.endpoint_url,
        }
        if not {"secret_env", "secret_credential", "secret_file"} & overrides.keys():
            values["secret_file"] = self.secret_file
        return CognitoSettings(**{**values, **overrides})

    def add_user(self, username: str, password: str, *, permanent: bool = True) -> None:
        """Another user; with permanent=False Cognito asks for a new password (NEW_PASSWORD_REQUIRED) at login."""
        self.idp.admin_create_user(
            UserPoolId=self.pool_id, Username=username, TemporaryPassword=password, MessageAction="SUPPRESS"
        )
        if permanent:
            self.idp.admin_set_user_password(
                UserPoolId=self.pool_id, Username=username, Password=password, Permanent=True
            )


@contextlib.contextmanager
def running_cognito(folder: Path, *, region: str = REGION, username: str = USERNAME) -> Iterator[MotoCognito]:
    """moto's Cognito on a free loopback port with one pool, app client and user; the secret file goes in `folder`."""
    with moto_server() as endpoint_url, cognito_pool(endpoint_url, folder, region=region, username=username) as pool:
        yield pool


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's ThreadedMotoServer on 127.0.0.1 and a free port; yields its URL. Stopping it takes up to 0.5 s."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def cognito_pool(
    endpoint_url: str, folder: Path, *, region: str = REGION, username: str = USERNAME
) -> Iterator[MotoCognito]:
    """A new user pool, app client and user on a running moto server (pools never collide); deleted at exit."""
    idp = boto3.client("cognito-idp", region_name=region, endpoint_url=endpoint_url, **_DUMMY_KEYS)
    pool_id = idp.create_user_pool(PoolName=f"rosterd-test-{secrets.token_hex(4)}")["UserPool"]["Id"]
    try:
        client_id = idp.create_user_pool_client(
            UserPoolId=pool_id,
            ClientName="rosterd",
            GenerateSecret=False,
            ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        )["UserPoolClient"]["ClientId"]
        secret = f"Sk-{secrets.token_urlsafe(24)}-9a"  # meets Cognito's default password policy
        pool = MotoCognito(
            endpoint_url=endpoint_url,
            region=region,
            pool_id=pool_id,
            client_id=client_id,
            username=username,
            secret=secret,
            secret_file=_write_secret(folder / "cognito-secret", secret),
            verify=TokenVerifier(
                keys=KeySet.import_key_set(_jwks(endpoint_url, pool_id)),
                issuer=f"https://cognito-idp.{region}.amazonaws.com/{pool_id}",
                client_id=client_id,
            ),
            idp=idp,
        )
        pool.add_user(username, secret)
        yield pool
    finally:
        idp.delete_user_pool(UserPoolId=pool_id)


def _write_secret(path: Path, secret: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(secret + "\n")
    return path


def _jwks(endpoint_url: str, pool_id: str) -> dict[str, Any]:
    """The pool's public keys, fetched once: moto's signing key does not change while it runs."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
    with opener.open(f"{endpoint_url}/{pool_id}/.well-known/jwks.json", timeout=10) as answer:
        return json.load(answer)
