"""The console speaking HTTPS itself ([admin] tls_cert and tls_key), in process: the session cookie is then
Secure with the __Host- prefix (sent only over HTTPS, only to this host, for every path), and pages say
Strict-Transport-Security. Over plain HTTP (loopback behind a tunnel) the cookie cannot be Secure."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import aiohttp
import pytest

from daemon.config import AdminConfig, parse_settings
from daemon.console.server import ConsoleServer
from daemon.passwords import hash_secret
from daemon.store import Store
from tests.api.test_server import self_signed

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict]] = []

    def __getattr__(self, level: str):
        return lambda event, **fields: self.seen.append((event, fields))


@pytest.mark.parametrize("tls", [True, False])
async def test_the_session_cookie_is_secure_and_host_bound_under_tls(tmp_path: Path, tls: bool) -> None:
    cert, key = self_signed(tmp_path) if tls else (None, None)
    settings = parse_settings('[[tenants]]\nname = "north"\npassword_hash = "$2b$12$' + "a" * 53 + '"\n',
                              tmp_path / "rosterd.toml")  # fmt: skip
    store = Store(tmp_path / "rosterd.db", settings.target_names())
    store.add_admin_user("ana", "admin", None, hash_secret("correct horse"))
    events = Events()
    console = ConsoleServer(AdminConfig(port=0, tls_cert=cert, tls_key=key), store, lambda: settings, events)
    port = await console.start()
    base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(cert)) if tls else None
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
            async with client.get(f"{base}/login", ssl=context) as answer:
                token = CSRF.search(await answer.text())[1]
                first = answer.headers.getall("Set-Cookie")
            form = {"csrf": token, "name": "ana", "password": "correct horse"}
            async with client.post(f"{base}/login", data=form, ssl=context, allow_redirects=False) as answer:
                assert answer.status == 303 and answer.headers["Location"] == "/"
                logged_in = answer.headers.getall("Set-Cookie")
            async with client.get(f"{base}/", ssl=context) as answer:
                assert answer.status == 200 and "north" in await answer.text()
                assert ("Strict-Transport-Security" in answer.headers) is tls
        for cookie in (first[0], logged_in[0]):
            attributes = [part.strip().lower() for part in cookie.split(";")]
            assert cookie.startswith("__Host-rosterd=" if tls else "rosterd=")
            assert {"httponly", "samesite=strict", "path=/"} <= set(attributes)
            assert ("secure" in attributes) is tls
        assert ("console.login", {"account": "ana", "role": "admin", "remote_ip": "127.0.0.1"}) in events.seen
    finally:
        await console.stop()
        store.close()
