"""What the admin console's end-to-end tests share: console accounts made as an operator makes them (the
`rosterd admin-user add` command), the console's address from the daemon's own log, and a plain HTTP client
that logs in through the form the way a browser does (cookie jar, CSRF token read from the page).

Every daemon the tests start has its console on a free port of its own (RunningDaemon writes `[admin] port = 0`).
"""

from __future__ import annotations

import re
import secrets
import subprocess
from dataclasses import dataclass

import aiohttp

from tests.e2e.conftest import ROSTERD, RunningDaemon

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
TOTP_SECRET = re.compile(r"^totp_secret: (\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class Account:
    name: str
    password: str
    totp_secret: str | None = None


def add_account(daemon: RunningDaemon, name: str, *, role: str | None = None, tenant: str | None = None,
                totp: bool = False) -> Account:  # fmt: skip
    """An account made with `rosterd admin-user add` (works before or while the daemon runs)."""
    password = f"{name}-{secrets.token_urlsafe(12)}"
    args = [str(ROSTERD), "admin-user", "add", name, "--password-stdin", "--config", str(daemon.config)]
    if role:
        args += ["--role", role]
    if tenant:
        args += ["--tenant", tenant]
    if totp:
        args.append("--totp")
    done = subprocess.run(args, input=password + "\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    secret = TOTP_SECRET.search(done.stdout)
    return Account(name, password, secret[1] if secret else None)


def console_url(daemon: RunningDaemon) -> str:
    """http://127.0.0.1:PORT of the daemon's console, from its `console.started` event (the latest start)."""
    started = daemon.events("console.started", run=-1)
    assert started, "the console did not start:\n" + daemon.output(run=-1)[-3000:]
    return f"http://127.0.0.1:{started[-1]['port']}"


class Browserless:
    """An HTTP client that keeps cookies and reads the CSRF token from each page it gets, as a browser would."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # unsafe: an IP host
        self.csrf: str | None = None

    async def __aenter__(self) -> Browserless:
        return self

    async def __aexit__(self, *_exc) -> None:
        await self.session.close()

    async def get(self, path: str, **kwargs) -> tuple[int, str]:
        async with self.session.get(self.base + path, **kwargs) as answer:
            text = await answer.text()
            found = CSRF.search(text)
            if found:
                self.csrf = found[1]
            return answer.status, text

    async def post(self, path: str, data: dict | None = None, csrf: bool = True, **kwargs) -> tuple[int, str]:
        form = dict(data or {})
        if csrf and self.csrf is not None:
            form.setdefault("csrf", self.csrf)
        async with self.session.post(self.base + path, data=form, **kwargs) as answer:
            text = await answer.text()
            found = CSRF.search(text)
            if found:
                self.csrf = found[1]
            return answer.status, text

    async def log_in(self, account: Account, code: str | None = None) -> int:
        """Through the login form; the status of the page it ends on (200 when logged in)."""
        await self.get("/login")
        status, _ = await self.post("/login", {"name": account.name, "password": account.password,
                                               "code": code or ""})  # fmt: skip
        return status
