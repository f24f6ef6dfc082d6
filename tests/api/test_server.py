"""The API server in-process on a free port (daemon/targets/api/server.py): built-in TLS, the cap on token
requests waiting for argon2, answers before the first publication, and methods it refuses. Requests go over
real sockets with aiohttp's client; the store is a real SQLite file."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import ssl
import threading
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from daemon.store import Store
from daemon.targets.api import auth, server
from daemon.passwords import hash_secret
from daemon.targets.api.auth import new_client
from daemon.targets.api.server import TOKEN_QUEUE, ApiServer
from daemon.targets.settings import ApiConfig
from daemon.targets.settings import ApiTarget

TARGETS = {("north", "vendor"): ApiTarget(type="api", name="vendor")}


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = folder / "api.crt", folder / "api.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_file, key_file


@pytest.fixture
async def running(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[tuple[ApiServer, str, list]]:
    tls = getattr(request, "param", False)
    cert, key = self_signed(tmp_path) if tls else (None, None)
    store = Store(tmp_path / "rosterd.db", {"north": ["vendor"]})
    logged: list[tuple[str, str, dict]] = []
    api = ApiServer(ApiConfig(port=0, tls_cert=cert, tls_key=key), store, tmp_path / "state", lambda: TARGETS,
                    lambda level, event, **fields: logged.append((level, event, fields)),
                    lambda operation, status, seconds: logged.append(("metric", operation, {"status": status})))
    port = await api.start()
    try:
        yield api, f"{'https' if tls else 'http'}://127.0.0.1:{port}", logged
    finally:
        await api.stop()
        store.close()


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def client_of(api: ApiServer) -> tuple[str, str]:
    client_id, secret = new_client()
    api.store.add_api_client(client_id, "north", "vendor", hash_secret(secret))
    return client_id, secret


@pytest.mark.parametrize("running", [True], indirect=True)
async def test_built_in_tls_serves_tokens_and_pages(running, tmp_path: Path) -> None:
    api, base, _logged = running
    client_id, secret = client_of(api)
    trusted = ssl.create_default_context(cafile=tmp_path / "api.crt")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/oauth2/token", data={"grant_type": "client_credentials"},
                             headers=basic(client_id, secret), ssl=trusted) as answer:  # fmt: skip
            assert answer.status == 200
            token = (await answer.json())["access_token"]
        async with http.get(f"{base}/ims/oneroster/v1p1/users", headers={"Authorization": f"Bearer {token}"},
                            ssl=trusted) as answer:  # fmt: skip
            assert answer.status == 200 and answer.headers["X-Total-Count"] == "0"  # nothing published yet
            assert await answer.json() == {"users": []}
            first = f'<{base}/ims/oneroster/v1p1/users?limit=100&offset=0>; rel="first"'
            assert answer.headers["Link"].startswith(first)
        old = ssl.create_default_context(cafile=tmp_path / "api.crt")
        with warnings.catch_warnings():  # the point is to try what is deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises(aiohttp.ClientError):  # below TLS 1.2 is refused
            async with http.get(f"{base}/oauth2/token", ssl=old):
                pass


async def test_before_the_first_publication_collections_are_empty_and_records_unknown(running) -> None:
    api, base, logged = running
    client_id, secret = client_of(api)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/oauth2/token", data={"grant_type": "client_credentials",
                             "client_id": client_id, "client_secret": secret}) as answer:  # fmt: skip
            token = (await answer.json())["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{base}/ims/oneroster/rostering/v1p2/users/u1", headers=bearer) as answer:
            body = await answer.json()
            assert answer.status == 404
            assert body["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"] == "unknownobject"
        async with http.get(f"{base}/ims/oneroster/rostering/v1p2/schools/s1/classes", headers=bearer) as answer:
            assert answer.status == 404  # the parent is unknown
        async with http.post(f"{base}/ims/oneroster/v1p1/users", headers=bearer) as answer:
            assert answer.status == 405
            body = await answer.json()
            assert body["imsx_codeMajor"] == "failure"
        async with http.get(f"{base}/oauth2/token") as answer:
            assert answer.status == 405 and answer.headers["Allow"] == "POST"
    lines = [fields for _level, event, fields in logged if event == "api.request"]
    assert [line["status"] for line in lines] == [200, 404, 404, 405, 405]
    counted = [(operation, fields["status"]) for level, operation, fields in logged if level == "metric"]
    assert counted == [("token", 200), ("v1p2 /users/{id}", 404), ("v1p2 /schools/{id}/classes", 404),
                       ("unknown", 405), ("token", 405)]  # each request counted under its operation (a POST: none)
    assert all(token not in repr(line) and secret not in repr(line) for line in lines)


async def test_token_requests_beyond_the_queue_are_refused_at_once(running, monkeypatch) -> None:
    api, base, _logged = running
    release = threading.Event()
    real = auth.token_request

    def slow(*args, **kwargs):  # an argon2 check that takes as long as the test wants
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(server.auth, "token_request", slow)
    form = {"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "guess"}
    async with aiohttp.ClientSession() as http:

        async def ask() -> int:
            async with http.post(f"{base}/oauth2/token", data=form) as answer:
                return answer.status

        waiting = [asyncio.create_task(ask()) for _ in range(TOKEN_QUEUE)]
        while api._token_requests < TOKEN_QUEUE:  # every one of them is in the queue
            await asyncio.sleep(0.01)
        async with http.post(f"{base}/oauth2/token", data=form) as answer:
            assert answer.status == 429 and answer.headers["Retry-After"] == "1"
            assert (await answer.json())["error"] == "temporarily_unavailable"
        release.set()
        assert await asyncio.gather(*waiting) == [401] * TOKEN_QUEUE  # unknown client, each answered


async def test_a_page_read_ahead_is_not_served_from_a_publication_replaced_since(running, tmp_path: Path) -> None:
    """The server reads each client's next page ahead; when a new publication is switched in between two
    pages, the next page comes from the new one (day 2 has a fourth user: u2 left as tobedeleted, u3 came)."""
    from daemon.snapshots.job import UploadJob, run_job
    from daemon.targets.api.publish import make_visible, publish_target

    from .test_publish import _zip

    api, base, _logged = running
    client_id, secret = client_of(api)
    folder = api.state_dir / "targets" / "north" / "vendor"
    published = []
    for day in (1, 2):
        (tmp_path / f"day{day}.zip").write_bytes(_zip(day))
        assert run_job(UploadJob(tmp_path / f"day{day}.zip", tmp_path / f"snap{day}")).snapshot is not None
        out = folder / f"u-{day}@2026120{day}T000000.000000Z"
        publish_target(str(tmp_path / f"snap{day}"), str(published[-1]) if published else None, {}, ["1.1"], 30,
                       "2026-12-07", dt.datetime.now(dt.UTC).isoformat(), str(out), base)  # fmt: skip
        if day == 1:
            make_visible(out, dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
        published.append(out)
    hidden = published[1].rename(tmp_path / "day2-publication")  # day 2 is switched in only between the pages
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/oauth2/token", data={"grant_type": "client_credentials"},
                             headers=basic(client_id, secret)) as answer:  # fmt: skip
            bearer = {"Authorization": f"Bearer {(await answer.json())['access_token']}"}

        async def page(offset: int) -> tuple[str, list[str]]:
            async with http.get(f"{base}/ims/oneroster/v1p1/users?limit=1&offset={offset}", headers=bearer) as got:
                return got.headers["X-Total-Count"], [u["sourcedId"] for u in (await got.json())["users"]]

        assert await page(0) == ("3", ["t1"])
        await asyncio.sleep(0.2)  # the next page is read ahead meanwhile, from day 1
        hidden.rename(published[1])
        make_visible(published[1], dt.datetime(2026, 12, 2, tzinfo=dt.UTC))
        assert await page(1) == ("4", ["u1"])  # day 2's count: not the page read ahead from day 1
        assert await page(2) == ("4", ["u2"])
