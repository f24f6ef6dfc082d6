"""The OneRoster REST API on its own port (`[api]`): the token endpoint and the 41 read operations of 1.1
(`/ims/oneroster/v1p1/...`) and 1.2 (`/ims/oneroster/rostering/v1p2/...`), each client seeing only its api
target's publication (daemon/targets/api/publish.py).

    POST /oauth2/token      grant_type=client_credentials, the client in HTTP Basic or the form; the token
                            covers every version its target serves, or those of the scopes it asks for
    GET  /ims/oneroster/v1p1/users?limit=5000&offset=0&filter=status%3D'active'
                            Authorization: Bearer TOKEN

How a request goes: the bearer token is looked up (401 when missing, unknown, expired or revoked; the client's
target must still be configured), the version's scope for the operation checked (403), the client's token
bucket charged (429 with Retry-After), the query parsed (400 with its minor code), and the page read from the
publication in one of the server's own threads, so neither validation nor publishing (worker processes) nor
one slow page holds up another request. While a client receives a page, its next page (same query, next
offset) is read ahead in those threads, and served if the client asks for it next and the publication is
still the same (ReadAhead): a crawl then costs little more than sending the pages. The argon2 check of a
client secret runs in a pool of two threads of its own, with at most TOKEN_QUEUE token requests waiting (more
get 429), so a flood of guesses delays no page. Every answer is logged once as `api.request` (client, tenant,
target, method, path, status, rows, elapsed_ms; never the token or a secret) and counted per operation in
/metrics. An unexpected failure is a 500
with the status payload and nothing of the cause, which goes to the log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlencode

import polars as pl
from aiohttp import web

from daemon.http import PlainServer
from daemon.store import StoreInterface
from daemon.targets.api import auth
from daemon.targets.api.endpoints import COLLECTIONS, RELATIONSHIP_SCOPES, RELATIONSHIPS, Collection, Selection
from daemon.targets.api.errors import ApiError, forbidden, status_payload, unauthorised, unknown_object
from daemon.targets.api.publish import NOW_MARK, PREFIXES, json_fields
from daemon.targets.api.query import CollectionFields, Query, parse_collection_query, parse_record_query
from daemon.targets.api.reader import Reader
from daemon.targets.api.target import Publications
from daemon.targets.settings import ApiConfig, ApiTarget, RateLimit

TOKEN_PATH = "/oauth2/token"
JSON = "application/json"
TOKEN_QUEUE = 32  # token requests waiting at once; more get 429 at once


Observe = Callable[[str, int, float], None]  # (operation, status, seconds)


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per client."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}

    def wait_for(self, client_id: str, limit: RateLimit, now: float) -> float:
        """0 when the request may go (and is charged), else the seconds until it may."""
        bucket = self._buckets.setdefault(client_id, _Bucket(float(limit.burst), now))
        bucket.tokens = min(float(limit.burst), bucket.tokens + (now - bucket.at) * limit.requests_per_second)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / limit.requests_per_second


@dataclass
class _Seen:
    """What one request learned, for its log line."""

    operation: str = "unknown"
    client: str | None = None
    tenant: str | None = None
    target: str | None = None
    rows: int | None = None


class ApiServer:
    def __init__(
        self,
        config: ApiConfig,
        store: StoreInterface,
        state_dir: Path,
        targets: Callable[[], Mapping[tuple[str, str], ApiTarget]],
        log: Callable[..., None],
        observe: Observe | None = None,
        publications: Publications | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.state_dir = state_dir
        self.publications = publications or Publications(state_dir)  # which one each target serves now
        self.targets = targets
        self.log = log  # log(level, event, **fields)
        self.observe = observe
        self.reader = Reader()
        self.limiter = RateLimiter()
        self._reads = ThreadPoolExecutor(config.threads, thread_name_prefix="api-read")
        self._auth = ThreadPoolExecutor(2, thread_name_prefix="api-auth")  # bearer token lookups
        self._argon = ThreadPoolExecutor(2, thread_name_prefix="api-token")  # client secrets: argon2, slow on purpose
        self._runner: web.ServerRunner | None = None
        self._token_requests = 0  # token requests in the argon2 pool or waiting for it
        self._ahead = ReadAhead()
        self.port: int | None = None

    async def start(self) -> int:
        ssl_context = None
        if self.config.tls_cert is not None and self.config.tls_key is not None:
            import ssl

            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
            ssl_context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        self._runner = web.ServerRunner(PlainServer(self._handle), shutdown_timeout=5.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=ssl_context).start()
        self.port = self._runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._reads.shutdown(wait=False, cancel_futures=True)
        self._auth.shutdown(wait=False, cancel_futures=True)
        self._argon.shutdown(wait=False, cancel_futures=True)

    # -- every request ------------------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        seen = _Seen()
        try:
            response = await self._answer(request, seen)
        except ApiError as error:
            response = _error(error)
        except Exception as exc:  # the cause goes to the log, never to the client
            self.log("error", "api.failed", path=request.path, error=f"{type(exc).__name__}: {exc}")
            response = _payload(500, status_payload("invaliddata", "The server could not answer this request"))
        elapsed = time.perf_counter() - started
        self.log("info", "api.request", client=seen.client, tenant=seen.tenant, target=seen.target,
                 method=request.method, path=request.path, status=response.status, rows=seen.rows,
                 elapsed_ms=round(elapsed * 1000, 1))  # fmt: skip
        if self.observe is not None:
            self.observe(seen.operation, response.status, elapsed)
        return response

    async def _answer(self, request: web.BaseRequest, seen: _Seen) -> web.StreamResponse:
        if request.path == TOKEN_PATH:
            seen.operation = "token"
            return await self._token(request, seen)
        version, segments = _route(request.raw_path)
        if request.method not in ("GET", "HEAD"):
            raise ApiError(405, "invaliddata", "The OneRoster rostering API is read only: use GET")
        loop = asyncio.get_running_loop()
        now = datetime.now(UTC)
        grant = await loop.run_in_executor(self._auth, auth.check_bearer, self.store,
                                           request.headers.get("Authorization"), now)  # fmt: skip
        if grant is None:
            raise unauthorised()
        seen.client, seen.tenant, seen.target = grant.client_id, grant.tenant, grant.target
        target = self.targets().get((grant.tenant, grant.target))
        if target is None:
            raise unauthorised("This client's API target is no longer configured")
        origin = (self.config.public_url or f"{request.scheme}://{request.host}").rstrip("/")
        operation, scopes, query, make_run = self._operation(version, segments, request, origin)
        seen.operation = f"{auth.VERSION_PATHS[version]} {operation}"
        if not any(auth.scope_uri(version, name) in grant.scopes for name in scopes):
            raise forbidden(f"This request needs the scope {auth.scope_uri(version, scopes[0])}")
        wait = self.limiter.wait_for(grant.client_id, target.rate_limit, time.monotonic())
        if wait > 0:
            raise _TooMany(wait)
        pages = (grant.client_id, request.path, tuple(p for p in request.query.items() if p[0] != "offset"))
        ahead = self._ahead.take(pages, query.offset) if query is not None else None
        answer = None
        if ahead is not None:
            try:
                answer = await asyncio.wrap_future(ahead)
            except Exception:  # noqa: BLE001 - whatever went wrong ahead, the read below meets it (or not) again
                answer = None
            current = await loop.run_in_executor(self._reads, self.publications.current, grant.tenant, grant.target)
            if answer is not None and answer.folder != current:
                answer = None  # read ahead from a publication replaced since
        if answer is None:
            answer = await loop.run_in_executor(self._reads, self._read, grant.tenant, grant.target,
                                                make_run(query), origin)  # fmt: skip
        seen.rows = answer.rows
        if query is not None and query.offset + query.limit < answer.total:  # the client's next page, read ahead
            following = dataclasses.replace(query, offset=query.offset + query.limit)
            self._ahead.put(pages, following.offset, self._reads.submit(
                self._read, grant.tenant, grant.target, make_run(following), origin))  # fmt: skip
        return web.Response(status=200, body=answer.body, content_type=JSON, charset="utf-8", headers=answer.headers)

    # -- the token endpoint -----------------------------------------------------------------------------------

    async def _token(self, request: web.BaseRequest, seen: _Seen) -> web.Response:
        if request.method != "POST":
            return _payload(405, {"error": "invalid_request", "error_description": "POST the token request"},
                            Allow="POST")  # fmt: skip
        if self._token_requests >= TOKEN_QUEUE:  # a flood of guesses waits for nobody's argon2
            return _payload(429, {"error": "temporarily_unavailable", "error_description": "too many token "
                                  "requests at once; retry shortly"}, **{"Retry-After": "1"})  # fmt: skip
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        self._token_requests += 1
        try:
            answer = await asyncio.get_running_loop().run_in_executor(
                self._argon, auth.token_request, self.store, request.headers.get("Authorization"), form, None,
                datetime.now(UTC), self.targets(),
            )  # fmt: skip
        finally:
            self._token_requests -= 1
        if isinstance(answer, auth.AuthError):
            self.log("warning", "api.token_refused", error=answer.error, client=form.get("client_id"))
            return _payload(answer.status, answer.body(), **answer.headers())
        return _payload(200, answer.body(), Pragma="no-cache")

    # -- the read operations ------------------------------------------------------------------------------------

    def _operation(self, version: str, segments: list[str], request: web.BaseRequest, origin: str):
        """(operation name, scopes that allow it, the collection query (None: a single record), and what makes
        the read to run in a thread for a query)."""
        params = list(request.query.items())
        here = (origin + request.path, params)
        head = segments[0]
        if head not in COLLECTIONS:
            raise unknown_object(f"No such endpoint: {'/'.join(segments)}")
        parent = COLLECTIONS[head]
        if len(segments) == 1:
            query = parse_collection_query(params, _fields(parent, version), max_limit=self.config.max_limit)

            def collection(query: Query):
                return lambda folder, fills: self._page(folder, version, Selection(parent, parent.where, head), query,
                                                        here, fills)  # fmt: skip

            return f"/{head}", parent.scopes, query, collection
        if len(segments) == 2:
            query = parse_record_query(params, _fields(parent, version))
            return f"/{head}/{{id}}", parent.scopes, None, lambda _query: lambda folder, fills: self._one(
                folder, version, parent, segments[1], query, fills)
        if len(segments) == 3:
            shape, ids = (head, segments[2]), (segments[1],)
        elif len(segments) == 5 and segments[2] == "classes":
            shape, ids = (head, "classes", segments[4]), (segments[1], segments[3])
        else:
            shape, ids = (), ()
        resolve = RELATIONSHIPS.get(shape)
        if resolve is None:
            raise unknown_object(f"No such endpoint: {'/'.join(segments)}")
        child = COLLECTIONS[shape[-1]]
        query = parse_collection_query(params, _fields(child, version), max_limit=self.config.max_limit)
        name = "/" + "/".join(part if i % 2 == 0 else "{id}" for i, part in enumerate(segments))

        def related(query: Query):
            def run(folder: Path, fills):
                selection = resolve(self.reader, folder, version, ids)
                return self._page(folder, version, selection, query, here, fills)

            return run

        return name, RELATIONSHIP_SCOPES, query, related

    def _read(self, tenant: str, target: str, run, origin: str) -> Answer:
        """In a read thread: the answer from the target's current publication, its moment and this server's
        origin filled into the stored texts (see publish.py). A publication replaced while it was read (its
        files removed) is read again from the new one."""
        for attempt in (1, 2):
            folder = self.publications.current(tenant, target)
            try:
                if folder is None:  # nothing published yet: every collection empty, every record 404
                    return Answer(None, *run(self.state_dir / "no-publication-yet", ()))
                published = self.reader.publication(folder)
                fills = [(NOW_MARK, f'"dateLastModified":"{published.moment_text}"')]
                if published.base_url != origin:  # asked by another name than the publication was made for
                    fills.append((f'"href":"{published.base_url}/', f'"href":"{origin}/'))
                return Answer(folder, *run(folder, fills))
            except (OSError, pl.exceptions.PolarsError):  # polars wraps a file gone mid-read in its own error
                if attempt == 2 or folder is None or folder.exists():
                    raise
                self.reader.forget(folder)
        raise AssertionError("unreachable")

    def _page(self, folder: Path, version: str, selection: Selection, query: Query, here: tuple, fills) -> tuple:
        """A collection page as bytes. The texts are filled in, joined and wrapped by polars: a page of 5000
        records is megabytes, and each Python copy of it costs more than all of polars' work."""
        page = self.reader.collection(folder, version, selection.child.entity, query, selection.where, selection.key)
        texts = page.texts if query.fields is None else pl.Series(_selected(page.texts, query.fields), dtype=pl.String)
        filled = pl.lit(texts)
        for mark, value in fills:
            filled = filled.str.replace_all(mark, value, literal=True)
        wrapped = pl.concat_str(pl.lit('{"' + selection.child.plural + '":['), filled.str.join(","), pl.lit("]}"))
        body = pl.select(wrapped).to_series().cast(pl.Binary).item()
        headers = {"X-Total-Count": str(page.total), "Cache-Control": "no-store",
                   "Link": _links(here, query, page.total)}  # fmt: skip
        return body, headers, texts.len(), page.total

    def _one(self, folder: Path, version: str, collection: Collection, sourced_id: str, query: Query, fills) -> tuple:
        text = self.reader.record(folder, version, collection.entity, sourced_id, collection.where)
        for mark, value in fills:
            text = text.replace(mark, value)
        (text,) = _selected([text], query.fields)
        return ('{"' + collection.singular + '":' + text + "}").encode(), {"Cache-Control": "no-store"}, 1, 1


@dataclass(frozen=True, slots=True)
class Answer:
    folder: Path | None  # the publication it was read from
    body: bytes
    headers: dict[str, str]
    rows: int
    total: int  # X-Total-Count (1 for a single record)


class ReadAhead:
    """Each client's next page, read while the client still receives this one: a crawl asks for pages one
    after another, so on a machine with a core to spare the next one is ready when it is asked for. One page
    per client (the most recent clients' only), dropped unless asked for next, with the same query."""

    def __init__(self, clients: int = 64) -> None:
        self.clients = clients
        self._pages: OrderedDict[str, tuple[tuple, int, Future]] = OrderedDict()

    def take(self, pages: tuple, offset: int) -> Future | None:
        found = self._pages.pop(pages[0], None)
        if found is not None and found[:2] == (pages, offset):
            return found[2]
        if found is not None:
            found[2].cancel()
        return None

    def put(self, pages: tuple, offset: int, future: Future) -> None:
        earlier = self._pages.pop(pages[0], None)
        if earlier is not None:
            earlier[2].cancel()
        self._pages[pages[0]] = (pages, offset, future)
        while len(self._pages) > self.clients:
            self._pages.popitem(last=False)[1][2].cancel()


class _TooMany(ApiError):
    def __init__(self, wait: float) -> None:
        super().__init__(429, "server_busy", "Too many requests from this client; retry after the time given")
        self.retry_after = max(1, math.ceil(wait))


def _route(raw_path: str) -> tuple[str, list[str]]:
    """The version and the percent-decoded path segments after its prefix; unknown: 404."""
    path = raw_path.partition("?")[0]
    for version, prefix in PREFIXES.items():
        if path.startswith(prefix + "/"):
            segments = [unquote(s) for s in path[len(prefix) + 1 :].split("/")]
            if segments and all(segments):
                return version, segments
    raise unknown_object("No such endpoint")


def _fields(collection: Collection, version: str) -> CollectionFields:
    names = frozenset(json_fields(collection.entity, version))
    sub = frozenset({"role"}) if collection.entity == "users" and version == "1.2" else frozenset()
    return CollectionFields(names, sub)


def _selected(texts, fields: tuple[str, ...] | None) -> list[str]:
    """The records' texts, cut to `fields` when the query names them."""
    if fields is None:
        return list(texts)
    wanted = set(fields)
    return [json.dumps({k: v for k, v in json.loads(t).items() if k in wanted}, separators=(",", ":"))
            for t in texts]  # fmt: skip


def _links(here: tuple[str, list[tuple[str, str]]], query: Query, total: int) -> str:
    """The Link header: the first, previous, next and last pages of the same query, as paths with the same
    parameters but offset (and limit, as clamped)."""
    path, params = here
    kept = [(k, v) for k, v in params if k not in ("offset", "limit")]

    def url(offset: int) -> str:
        return path + "?" + urlencode([*kept, ("limit", str(query.limit)), ("offset", str(offset))])

    last = max(0, (total - 1) // query.limit * query.limit) if total else 0
    links = [(url(0), "first")]
    if query.offset > 0:
        links.append((url(max(0, min(query.offset, total) - query.limit)), "prev"))
    if query.offset + query.limit < total:
        links.append((url(query.offset + query.limit), "next"))
    links.append((url(last), "last"))
    return ", ".join(f'<{u}>; rel="{rel}"' for u, rel in links)


def _error(error: ApiError) -> web.Response:
    headers = {}
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="rosterd"'
    if isinstance(error, _TooMany):
        headers["Retry-After"] = str(error.retry_after)
    return _payload(error.status, error.payload(), **headers)


def _payload(status: int, body: dict, **headers: str) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type=JSON,
                        headers={"Cache-Control": "no-store", **headers})  # fmt: skip


