"""The admin console on its own port (`[admin]`): pages rendered on the server from daemon/console/templates,
with the CSS and the one small script in daemon/console/static (no build step, nothing from elsewhere).

    GET  /login, POST /login (name, password, code), POST /logout
    GET  /                      the overview (a district account goes to its tenant's page)
    GET  /events                server-sent events: `changed` with a tenant's name when its uploads or
                                deliveries move on; the pages refresh their live parts from it
    and the pages and actions of daemon/console/pages.py

How a request goes: the security headers are set on every answer (a Content-Security-Policy allowing only
this origin's script and style, no framing, no referrer to elsewhere, no caching of pages); the session
cookie is looked up (daemon/console/sessions.py), and a request without a live logged-in session is sent to
/login (GET) or refused (anything else); the account is read again from the store, so a disabled one is out
at its next request; a POST must carry the session's CSRF token (form field `csrf` or header X-CSRF-Token)
and, when the browser sends an Origin, this origin; then the page reads what it shows in the console's own
threads (store reads, Parquet files), never on the event loop, so neither uploads being validated (worker
processes) nor a slow page holds up another.

Failed logins are scored by the SFTP listener's defender (the same scores and bans, per source address); a
banned address gets 429 from the login form. The argon2 check runs in two threads of its own with at most
LOGIN_QUEUE logins waiting (more get 429), so a flood of guesses delays no page. Each login, logout, failed
login, refusal and action is logged (`console.*`, with the account, its role and the address; never a
password or a code).
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from aiohttp import web

from daemon.config import AdminConfig, Settings
from daemon.console import accounts
from daemon.console.access import Access
from daemon.console.queries import seconds_since
from daemon.console.sessions import Session, Sessions
from daemon.objects.mirror import NO_MIRROR, Mirror
from daemon.snapshots.storage import META_FILE, Folder
from daemon.store import SnapshotRecord, StoreInterface

HERE = Path(__file__).resolve().parent
LOGIN_QUEUE = 16  # login checks waiting at once; more get 429 at once
KEEP_ALIVE_SECONDS = 15.0  # a comment on each event stream this often, so proxies keep it open
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")  # fmt: skip
SESSION = web.RequestKey("session", Session)  # the request's session (anonymous until a login)
ACCESS = web.RequestKey("access", Access)  # set for a logged-in session's request only
NEW_SESSION = web.RequestKey("new_session", bool)  # a login or logout made a new session: its cookie is sent
PUBLIC = frozenset({"/login", "/static/console.css", "/static/console.js", "/favicon.ico"})

class Gate:
    """The defender, as the console uses it (the SFTP listener's; None when the defender is off)."""

    def __init__(self, banned_until: Callable[[str], float | None],
                 penalise: Callable[[str, bool], object]) -> None:  # fmt: skip
        self.banned_until = banned_until
        self.penalise = penalise  # (ip, unknown_user) -> a Ban when one started


class ConsoleServer:
    def __init__(
        self,
        config: AdminConfig,
        store: StoreInterface,
        settings: Callable[[], Settings],
        log: Any,
        gate: Gate | None = None,
        receipts: Any = None,
        mirror: Mirror = NO_MIRROR,
    ) -> None:
        self.config = config
        self.store = store
        self.settings = settings
        self.log = log
        self.gate = gate
        self.receipts = receipts  # daemon.receipts.Receipts: an action rewrites the receipts it changes
        self.mirror = mirror  # replicas: snapshots another replica made are read in place from the bucket
        self.tls = config.tls_cert is not None
        self.cookie = "__Host-rosterd" if self.tls else "rosterd"
        self.sessions = Sessions(config.idle_minutes * 60, config.session_hours * 3600)
        self.threads = ThreadPoolExecutor(config.threads, thread_name_prefix="console")
        self.login_threads = ThreadPoolExecutor(2, thread_name_prefix="console-login")
        self.logins_waiting = 0
        self.used_codes: dict[tuple[str, str], float] = {}  # (account, TOTP code) -> when: each code works once
        self.streams: set[tuple[Access, asyncio.Queue]] = set()
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["ago"] = ago
        self.templates.filters["qs"] = lambda values: "&".join(f"{k}={quote(str(v))}" for k, v in values.items() if v)
        self.app = web.Application(middlewares=[self._headers, self._session])
        self.runner: web.AppRunner | None = None
        self.port: int | None = None
        from daemon.console import pages, preview  # the pages need this module's helpers

        self.app.router.add_get("/login", self._login_page)
        self.app.router.add_post("/login", self._login)
        self.app.router.add_post("/logout", self._logout)
        self.app.router.add_get("/events", self._events)
        self.app.router.add_static("/static", HERE / "static", follow_symlinks=False)
        pages.add_routes(self)
        preview.add_routes(self)

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> int:
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        context = None
        if self.tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        site = web.TCPSite(self.runner, self.config.host, self.config.port, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the port chosen when 0 was asked for
        return self.port

    async def stop(self) -> None:
        for _access, queue in list(self.streams):
            queue.put_nowait(None)
        if self.runner is not None:
            await self.runner.cleanup()
        self.threads.shutdown(wait=False, cancel_futures=True)
        self.login_threads.shutdown(wait=False, cancel_futures=True)

    # -- what pages use -------------------------------------------------------------------------------

    async def read(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """Run a blocking read in the console's threads."""
        return await asyncio.get_running_loop().run_in_executor(self.threads, functools.partial(fn, *args, **kwargs))


    def snapshot_folder(self, record: SnapshotRecord | None) -> Folder | None:
        """Where a kept snapshot is read from (here, or in place from the shared storage); None when it was
        pruned, is not whole, or there is none. Blocks: call it through `read`."""
        if record is None or record.pruned_at:
            return None
        return self.mirror.locate_folder(Path(record.path), META_FILE)
    def render(self, request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
        session: Session = request[SESSION]
        access = request.get(ACCESS)
        text = self.templates.get_template(template).render(
            csrf=session.csrf, me=access, flash=self._take_flash(session), path=request.path,
            settings=self.settings(), **values)  # fmt: skip
        return web.Response(text=text, content_type="text/html", status=status)

    def flash(self, request: web.Request, message: str) -> None:
        request[SESSION].flash.append(message)

    @staticmethod
    def _take_flash(session: Session) -> list[str]:
        messages, session.flash = session.flash, []
        return messages

    def access(self, request: web.Request) -> Access:
        return request[ACCESS]

    def ip(self, request: web.Request) -> str:
        return request.remote or "unknown"

    def refuse(self, request: web.Request, status: int, why: str, **fields: Any) -> web.HTTPException:
        """Log a refused request and give the answer to raise: 404 for what the account may not see (as for
        what does not exist), 403 for what it may not do."""
        access = request.get(ACCESS)
        self.log.warning("console.refused", status=status, reason=why, method=request.method, path=request.path,
                         account=access.name if access else None, remote_ip=self.ip(request), **fields)  # fmt: skip
        text = self.templates.get_template("error.html").render(
            status=status, message="Not found" if status == 404 else "Not allowed", me=access,
            csrf=request[SESSION].csrf if SESSION in request else "", flash=[], path=request.path,
            settings=self.settings())  # fmt: skip
        return _http_error(status, text)

    def action_log(self, request: web.Request, action: str, **fields: Any) -> None:
        access = self.access(request)
        self.log.info("console.action", action=action, account=access.name, role=access.role,
                      remote_ip=self.ip(request), **fields)  # fmt: skip

    def operator(self, request: web.Request, reason: str = "") -> str:
        """Who did it, as the store and receipts record it: the account, where from, and the reason given."""
        access = self.access(request)
        said = " ".join(reason.split())[:500]
        return f"{access.name} (console, {self.ip(request)}" + (f"; reason: {said})" if said else ")")

    def notify(self, tenant: str) -> None:
        """Something of `tenant` changed: the open event streams that show it are told."""
        for access, queue in list(self.streams):
            if access.sees(tenant) and queue.qsize() < 100:
                queue.put_nowait(tenant)

    # -- middleware -------------------------------------------------------------------------------------

    @web.middleware
    async def _headers(self, request: web.Request, handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        if not request.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        if self.tls:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        if isinstance(response, web.HTTPException):
            raise response
        return response

    @web.middleware
    async def _session(self, request: web.Request, handler) -> web.StreamResponse:
        public = request.path in PUBLIC or request.path.startswith("/static/")
        session = self.sessions.get(request.cookies.get(self.cookie), touch=request.path != "/events")
        if session is None:
            if request.path.startswith("/static/"):
                return await handler(request)
            session = self.sessions.new(self.ip(request))
            fresh = True
        else:
            fresh = False
        request[SESSION] = session
        if session.logged_in:
            account = await self.read(self.store.admin_user, session.name)
            if account is None or account.disabled_at is not None:
                self.sessions.end(session)
                self.log.info("console.session_ended", account=session.name, reason="account disabled",
                              remote_ip=self.ip(request))  # fmt: skip
                session = self.sessions.new(self.ip(request))
                request[SESSION] = session
                fresh = True
            else:
                request[ACCESS] = Access(account.name, account.role, account.tenant)
        if request.method not in ("GET", "HEAD"):
            self._check_csrf(request, session, await request.post() if request.content_type in (
                "application/x-www-form-urlencoded", "multipart/form-data") else {})  # fmt: skip
        if not session.logged_in and not public:
            if request.method in ("GET", "HEAD") and request.path != "/events":
                target = request.path_qs if request.path != "/" else ""
                response: web.StreamResponse = web.HTTPSeeOther("/login" + (f"?next={quote(target)}" if target else ""))
            else:
                response = web.HTTPUnauthorized(text="log in first\n")
            self._set_cookie(response, session, fresh)
            raise response
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self._set_cookie(exc, request[SESSION], fresh or request.get(NEW_SESSION, False))
            raise
        self._set_cookie(response, request[SESSION], fresh or request.get(NEW_SESSION, False))
        return response

    def _check_csrf(self, request: web.Request, session: Session, form) -> None:
        token = form.get("csrf") or request.headers.get("X-CSRF-Token") or ""
        origin = request.headers.get("Origin")
        expected = f"{request.scheme}://{request.host}"
        if origin is not None and origin != expected:
            raise self.refuse(request, 403, "cross-origin request", origin=origin[:200])
        if not isinstance(token, str) or not secrets.compare_digest(token.encode(), session.csrf.encode()):
            raise self.refuse(request, 403, "missing or stale CSRF token")

    def _set_cookie(self, response: web.StreamResponse, session: Session, fresh: bool) -> None:
        if not fresh:
            return
        response.set_cookie(self.cookie, session.id, path="/", httponly=True, samesite="Strict", secure=self.tls)

    # -- login and logout -------------------------------------------------------------------------------

    async def _login_page(self, request: web.Request) -> web.StreamResponse:
        if request[SESSION].logged_in:
            raise web.HTTPSeeOther(_safe_next(request.query.get("next")))
        return self.render(request, "login.html", next=_safe_next(request.query.get("next")), error=None)

    async def _login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        name, password, code = (str(form.get(k, ""))[:1024] for k in ("name", "password", "code"))
        ip = self.ip(request)
        next_url = _safe_next(str(form.get("next", "")))
        if self.gate is not None and self.gate.banned_until(ip):
            self.log.warning("console.login_refused", reason="address banned", remote_ip=ip)
            return self.render(request, "login.html", status=429, next=next_url,
                               error="Too many failed logins from your address; try again later.")  # fmt: skip
        if self.logins_waiting >= LOGIN_QUEUE:
            self.log.warning("console.login_refused", reason="too many logins at once", remote_ip=ip)
            return self.render(request, "login.html", status=429, next=next_url, error="Busy; try again shortly.")
        self.logins_waiting += 1
        try:
            loop = asyncio.get_running_loop()
            account = await loop.run_in_executor(self.login_threads, functools.partial(
                accounts.check_login, self.store, name, password, code, datetime.now(UTC)))  # fmt: skip
            known = account is not None or await self.read(self.store.admin_user, name) is not None
        finally:
            self.logins_waiting -= 1
        if account is not None and account.totp and not self._first_use(name, code):
            account = None
        if account is None:
            self.log.warning("console.login_failed", account=name if known else None, remote_ip=ip)
            if self.gate is not None:
                self.gate.penalise(ip, not known)
            return self.render(request, "login.html", status=401, next=next_url,
                               error="Wrong name, password or code.")  # fmt: skip
        session = self.sessions.log_in(request[SESSION], account.name, account.role, account.tenant, ip)
        request[SESSION] = session
        request[NEW_SESSION] = True
        self.log.info("console.login", account=account.name, role=account.role, remote_ip=ip)
        raise web.HTTPSeeOther(next_url)

    def _first_use(self, name: str, code: str) -> bool:
        """A TOTP code logs in once: the same code again (replayed, or seen over a shoulder) is refused."""
        now = time.monotonic()
        for used in [k for k, at in self.used_codes.items() if now - at > 120]:
            del self.used_codes[used]
        key = (name, code.strip())
        if key in self.used_codes:
            return False
        self.used_codes[key] = now
        return True

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        session = request[SESSION]
        if session.logged_in:
            self.log.info("console.logout", account=session.name, remote_ip=self.ip(request))
        self.sessions.end(session)
        fresh = self.sessions.new(self.ip(request))
        request[SESSION] = fresh
        request[NEW_SESSION] = True
        raise web.HTTPSeeOther("/login")

    # -- live updates -----------------------------------------------------------------------------------

    async def _still_enabled(self, access: Access) -> bool:
        account = await self.read(self.store.admin_user, access.name)
        return account is not None and account.disabled_at is None

    async def _events(self, request: web.Request) -> web.StreamResponse:
        access = self.access(request)
        session = request[SESSION]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})  # fmt: skip
        await response.prepare(request)
        queue: asyncio.Queue = asyncio.Queue()
        entry = (access, queue)
        self.streams.add(entry)
        try:
            await response.write(b"retry: 3000\n\n")
            while True:
                try:
                    tenant = await asyncio.wait_for(queue.get(), KEEP_ALIVE_SECONDS)
                except TimeoutError:
                    if self.sessions.get(session.id, touch=False) is None or not await self._still_enabled(access):
                        break  # the session ended, or its account was disabled: the stream does too
                    await response.write(b": keep-alive\n\n")
                    continue
                if tenant is None:
                    break
                await response.write(f"event: changed\ndata: {tenant}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.streams.discard(entry)
        return response


def _http_error(status: int, text: str) -> web.HTTPException:
    kind = {403: web.HTTPForbidden, 404: web.HTTPNotFound, 400: web.HTTPBadRequest}.get(status, web.HTTPForbidden)
    return kind(text=text, content_type="text/html")


def _safe_next(value: str | None) -> str:
    """Where to go after logging in: a path of this site only (never another host)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    return "/" if parts.scheme or parts.netloc else value


def ago(at: str | None) -> str:
    """A stored time as a person reads it on a dashboard: '3 min ago', '2 d ago'."""
    seconds = seconds_since(at, datetime.now(UTC))
    if seconds is None:
        return "never"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now" if seconds >= -5 else "in the future"
