"""CognitoAuth against moto's Cognito in server mode, and against a scripted server for the answers moto never gives."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from daemon.targets.cers.cognito import CognitoAuth, CognitoError
from daemon.targets.cers.settings import CognitoSettings

from .moto_cognito import MotoCognito


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SentBodies:
    """What CognitoAuth sent, seen through an aiohttp trace: the JSON bodies in order."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.trace = aiohttp.TraceConfig()
        self.trace.on_request_chunk_sent.append(self._sent)

    async def _sent(self, session: Any, context: Any, params: aiohttp.TraceRequestChunkSentParams) -> None:
        if params.chunk:
            self.bodies.append(json.loads(params.chunk))

    @property
    def flows(self) -> list[str]:
        return [body["AuthFlow"] for body in self.bodies]


@pytest.fixture
def sent() -> SentBodies:
    return SentBodies()


@pytest.fixture
async def session(sent: SentBodies) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(trace_configs=[sent.trace]) as client:
        yield client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("kind", ["id", "access"])
async def test_login_gives_a_token_the_pool_accepts(
    cognito: MotoCognito, session: aiohttp.ClientSession, sent: SentBodies, kind: str
) -> None:
    auth = CognitoAuth(cognito.settings(token=kind), session)
    assert auth.username is None

    token = await auth.token()

    assert cognito.verify(token) == cognito.username, cognito.verify.last_rejection
    cognito.verify.token_use = frozenset({kind})
    assert cognito.verify(token) == cognito.username
    assert auth.username == cognito.username
    assert sent.bodies == [
        {
            "AuthFlow": "USER_PASSWORD_AUTH",
            "ClientId": cognito.client_id,
            "AuthParameters": {"USERNAME": cognito.username, "PASSWORD": cognito.secret},
        }
    ]


async def test_the_token_is_kept_until_the_refresh_margin(
    cognito: MotoCognito, session: aiohttp.ClientSession, sent: SentBodies, clock: FakeClock
) -> None:
    auth = CognitoAuth(cognito.settings(refresh_margin_seconds=300), session, clock=clock)
    first = await auth.token()
    clock.now += 3600 - 300 - 1

    assert await auth.token() == first
    assert sent.flows == ["USER_PASSWORD_AUTH"]


async def test_near_expiry_the_token_is_refreshed_without_the_password(
    cognito: MotoCognito, session: aiohttp.ClientSession, sent: SentBodies, clock: FakeClock
) -> None:
    auth = CognitoAuth(cognito.settings(refresh_margin_seconds=300), session, clock=clock)
    first = await auth.token()

    clock.now += 3600 - 300
    second = await auth.token()
    clock.now += 3600 - 300
    third = await auth.token()  # the refresh's answer has no new RefreshToken: the first one was kept

    assert len({first, second, third}) == 3
    assert cognito.verify(second) == cognito.verify(third) == cognito.username, cognito.verify.last_rejection
    assert sent.flows == ["USER_PASSWORD_AUTH", "REFRESH_TOKEN_AUTH", "REFRESH_TOKEN_AUTH"]
    refreshes = [body["AuthParameters"] for body in sent.bodies[1:]]
    assert refreshes[0] == refreshes[1] and set(refreshes[0]) == {"REFRESH_TOKEN"}
    assert cognito.secret not in json.dumps(sent.bodies[1:])


async def test_a_refused_refresh_logs_in_afresh(
    cognito: MotoCognito, session: aiohttp.ClientSession, sent: SentBodies, clock: FakeClock
) -> None:
    auth = CognitoAuth(cognito.settings(), session, clock=clock)
    await auth.token()
    cognito.idp.admin_user_global_sign_out(UserPoolId=cognito.pool_id, Username=cognito.username)
    clock.now += 3600

    token = await auth.token()

    assert cognito.verify(token) == cognito.username
    assert sent.flows == ["USER_PASSWORD_AUTH", "REFRESH_TOKEN_AUTH", "USER_PASSWORD_AUTH"]


async def test_relogin_logs_in_again_after_cers_refused_the_token(
    cognito: MotoCognito, session: aiohttp.ClientSession, sent: SentBodies
) -> None:
    auth = CognitoAuth(cognito.settings(), session)
    old = await auth.token()
    cognito.verify.reject_issued_so_far()
    assert cognito.verify(old) is None  # what the fake CERS answers with a 401

    new = await auth.relogin()

    assert new != old and await auth.token() == new
    assert cognito.verify(new) == cognito.username, cognito.verify.last_rejection
    assert sent.flows == ["USER_PASSWORD_AUTH", "USER_PASSWORD_AUTH"]


async def test_concurrent_callers_share_one_login_and_one_relogin(
    cognito: MotoCognito, session: aiohttp.ClientSession, sent: SentBodies
) -> None:
    auth = CognitoAuth(cognito.settings(), session)

    tokens = await asyncio.gather(*(auth.token() for _ in range(5)))
    renewed = await asyncio.gather(*(auth.relogin() for _ in range(5)))

    assert len(set(tokens)) == 1 and len(set(renewed)) == 1 and tokens[0] != renewed[0]
    assert sent.flows == ["USER_PASSWORD_AUTH", "USER_PASSWORD_AUTH"]


async def test_a_wrong_secret_is_a_permanent_refusal_that_does_not_show_the_secret(
    cognito: MotoCognito, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "Wrong-secret-7f3a9c"
    monkeypatch.setenv("CERS_SECRET", wrong)
    auth = CognitoAuth(cognito.settings(secret_env="CERS_SECRET"), session)

    with pytest.raises(CognitoError) as caught:
        await auth.token()

    err = caught.value
    assert err.permanent and err.code == "NotAuthorizedException"
    assert cognito.username in str(err) and "TOMS" in str(err) and "CERS_SECRET" in str(err)
    for text in (str(err), repr(err), repr(auth)):
        assert wrong not in text and cognito.secret not in text


async def test_a_user_asked_for_a_new_password_is_a_permanent_refusal(
    cognito: MotoCognito, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    cognito.add_user("fresh-user", "Temporary-Pass-1a", permanent=False)
    (tmp_path / "fresh").write_text("Temporary-Pass-1a")
    auth = CognitoAuth(cognito.settings(username="fresh-user", secret_file=tmp_path / "fresh"), session)

    with pytest.raises(CognitoError) as caught:
        await auth.token()

    assert caught.value.permanent and caught.value.code == "NEW_PASSWORD_REQUIRED"
    assert "Temporary-Pass-1a" not in str(caught.value)


async def test_an_unknown_user_and_an_unknown_client_are_permanent(
    cognito: MotoCognito, session: aiohttp.ClientSession
) -> None:
    for settings, code in (
        (cognito.settings(username="nobody"), "UserNotFoundException"),
        (cognito.settings(client_id="no-such-client"), "ResourceNotFoundException"),
    ):
        with pytest.raises(CognitoError) as caught:
            await CognitoAuth(settings, session).token()
        assert caught.value.permanent and caught.value.code == code, repr(caught.value)


async def test_a_missing_secret_is_permanent_and_nothing_is_sent(
    cognito: MotoCognito, session: aiohttp.ClientSession, sent: SentBodies, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CERS_SECRET", raising=False)
    auth = CognitoAuth(cognito.settings(secret_env="CERS_SECRET"), session)  # not read yet: no error here

    with pytest.raises(CognitoError) as caught:
        await auth.token()

    assert caught.value.permanent and caught.value.code == "secret"
    assert "CERS_SECRET" in str(caught.value) and sent.bodies == []
    monkeypatch.setenv("CERS_SECRET", cognito.secret)  # provided later: read at the next login
    assert cognito.verify(await auth.token()) == cognito.username


async def test_an_unreachable_endpoint_is_transient(session: aiohttp.ClientSession, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("Some-secret-1a")
    url = f"http://127.0.0.1:{closed_port()}/"
    settings = CognitoSettings(client_id="c", username="u", secret_file=tmp_path / "secret", endpoint_url=url)

    with pytest.raises(CognitoError) as caught:
        await CognitoAuth(settings, session).token()

    assert not caught.value.permanent and caught.value.code == "network"
    assert "Some-secret-1a" not in str(caught.value)


async def test_the_secret_from_a_systemd_credential(
    cognito: MotoCognito, session: aiohttp.ClientSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "cers-secret").write_text(cognito.secret + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    auth = CognitoAuth(cognito.settings(secret_credential="cers-secret"), session)

    assert cognito.verify(await auth.token()) == cognito.username


async def test_the_secret_from_a_file(cognito: MotoCognito, session: aiohttp.ClientSession) -> None:
    settings = cognito.settings()
    assert settings.secret_file == cognito.secret_file and cognito.secret_file.stat().st_mode & 0o077 == 0

    assert cognito.verify(await CognitoAuth(settings, session).token()) == cognito.username


# Answers moto never gives (throttling, faults, silence) come from a scripted server.

Answer = tuple[int, Any]  # HTTP status and a JSON body (a str body is sent as it is); None: never answer


def _fake_jwt(**claims: Any) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


def _tokens(name: str, expires_in: int = 3600) -> Answer:
    token = _fake_jwt(**{"cognito:username": name, "token_use": "id"})
    result = {"IdToken": token, "AccessToken": token, "RefreshToken": "r-" + name, "ExpiresIn": expires_in}
    return 200, {"AuthenticationResult": result}


@pytest.fixture
async def scripted(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., CognitoSettings]]:
    """A server answering InitiateAuth from a script; the fixture gives settings(*answers) pointing at it."""
    script: list[Answer | None] = []

    async def initiate_auth(request: web.Request) -> web.StreamResponse:
        answer = script.pop(0)
        if answer is None:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")
        status, body = answer
        text = body if isinstance(body, str) else json.dumps(body)
        return web.Response(status=status, text=text, content_type="application/x-amz-json-1.1")

    app = web.Application()
    app.router.add_post("/", initiate_auth)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    (tmp_path / "secret").write_text("Scripted-secret-1a")

    def settings(*answers: Answer | None) -> CognitoSettings:
        script.extend(answers)
        return CognitoSettings(
            client_id="c", username="u", secret_file=tmp_path / "secret", endpoint_url=f"http://127.0.0.1:{port}/"
        )

    yield settings
    await runner.cleanup()


@pytest.mark.parametrize(
    ("answer", "code", "permanent"),
    [
        ((400, {"__type": "x.y#TooManyRequestsException", "message": "Slow down"}), "TooManyRequestsException", False),
        ((500, {"__type": "InternalErrorException", "message": "oops"}), "InternalErrorException", False),
        ((502, "<html>Bad Gateway</html>"), "response", False),
        ((403, "<html>Forbidden</html>"), "response", True),
        ((400, {"__type": "InvalidParameterException:http://x", "message": "bad"}), "InvalidParameterException", True),
        ((200, {"ChallengeName": "SMS_MFA", "Session": "s"}), "SMS_MFA", True),
        ((200, {"AuthenticationResult": {"AccessToken": "a"}}), "response", True),
    ],
)  # fmt: skip
async def test_answers_are_sorted_into_transient_and_permanent(
    scripted: Callable[..., CognitoSettings], session: aiohttp.ClientSession, answer: Answer, code: str, permanent: bool
) -> None:
    with pytest.raises(CognitoError) as caught:
        await CognitoAuth(scripted(answer), session).token()

    assert (caught.value.code, caught.value.permanent) == (code, permanent), repr(caught.value)
    assert "Scripted-secret-1a" not in repr(caught.value)


async def test_a_silent_endpoint_times_out_as_transient(
    scripted: Callable[..., CognitoSettings], session: aiohttp.ClientSession
) -> None:
    auth = CognitoAuth(scripted(None), session, timeout_seconds=0.2)

    with pytest.raises(CognitoError) as caught:
        await auth.token()

    assert not caught.value.permanent and caught.value.code == "timeout"


async def test_while_a_refresh_fails_transiently_the_unexpired_token_is_still_used(
    scripted: Callable[..., CognitoSettings], session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    busy = (400, {"__type": "TooManyRequestsException", "message": "Rate exceeded"})
    auth = CognitoAuth(scripted(_tokens("u"), busy, busy), session, clock=clock)
    first = await auth.token()

    clock.now += 3600 - 60  # inside the margin, not yet expired
    assert await auth.token() == first
    clock.now += 60  # expired
    with pytest.raises(CognitoError) as caught:
        await auth.token()
    assert caught.value.code == "TooManyRequestsException" and not caught.value.permanent
