"""The console's pages and actions: each handler decides what the account may see (daemon/console/access.py),
reads in the console's threads (daemon/console/queries.py) and renders a template. A page whose tenant the
account may not see answers 404, as a page of nothing would.

    GET  /                                        overview (?partial=rows: its table body, for live updates)
    GET  /holds                                   held uploads of the tenants the account sees
    GET  /tenants/{tenant}                        upload history, chart, holds, targets (?partial=uploads)
    GET  /uploads/{upload_id}                     the receipt as a page, findings filtered and paged
    GET  /uploads/{upload_id}/findings.csv        the findings the filter picks, as CSV
    GET  /uploads/{upload_id}/changes             the change set, by entity and action, searchable by sourcedId
    POST /uploads/{upload_id}/approve|discard     reason=...
    GET  /tenants/{tenant}/targets/{target}       the target's outbox, scope and window
    POST /tenants/{tenant}/targets/{target}/pause|enable
    GET  /deliveries/{delivery_id}                one delivery: its state, attempts, what the receiver answered
    POST /deliveries/{delivery_id}/replay         force=1 to replay behind a newer delivery
    GET  /api-clients, POST /api-clients/{client_id}/revoke
    GET  /settings                                the effective configuration, secrets redacted (operators)

Every action is recorded in the store as the CLI records it (the operator text names the account, the address
and the reason), logged as `console.action`, and rewrites the receipts it changes.
"""

from __future__ import annotations

from aiohttp import web

from daemon.console import queries
from daemon.store import Refused, State

def add_routes(server) -> None:
    pages = Pages(server)
    router = server.app.router
    router.add_get("/", pages.overview)
    router.add_get("/holds", pages.holds)
    router.add_get("/tenants/{tenant}", pages.tenant)
    router.add_get("/uploads/{upload_id}", pages.upload)
    router.add_get("/uploads/{upload_id}/findings.csv", pages.findings_csv)
    router.add_get("/uploads/{upload_id}/changes", pages.changes)
    router.add_post("/uploads/{upload_id}/approve", pages.approve)
    router.add_post("/uploads/{upload_id}/discard", pages.discard)
    router.add_get("/tenants/{tenant}/targets/{target}", pages.target)
    router.add_post("/tenants/{tenant}/targets/{target}/pause", pages.pause)
    router.add_post("/tenants/{tenant}/targets/{target}/enable", pages.enable)
    router.add_get("/deliveries/{delivery_id}", pages.delivery)
    router.add_post("/deliveries/{delivery_id}/replay", pages.replay)
    router.add_get("/api-clients", pages.api_clients)
    router.add_post("/api-clients/{client_id}/revoke", pages.revoke)
    router.add_get("/settings", pages.settings_page)


SUPERSEDED_SHOWN = 50  # the newest superseded uploads the holds page lists


def _int(value: str | None, default: int = 1) -> int:
    try:
        return max(1, min(int(value or default), 1_000_000))
    except ValueError:
        return default


class Pages:
    def __init__(self, server) -> None:
        self.server = server

    # -- what every handler needs ------------------------------------------------------------------------

    def _tenant(self, request: web.Request, tenant: str) -> None:
        """404 unless the tenant is configured and the account sees it."""
        access = self.server.access(request)
        if self.server.settings().tenant(tenant) is None or not access.sees(tenant):
            raise self.server.refuse(request, 404, "tenant not shown to this account", tenant=tenant[:100])

    async def _upload(self, request: web.Request):
        try:
            upload = await self.server.read(self.server.store.get, request.match_info["upload_id"])
        except KeyError:
            raise self.server.refuse(request, 404, "no such upload") from None
        if not self.server.access(request).sees(upload.tenant):
            raise self.server.refuse(request, 404, "upload of a tenant not shown", upload_id=upload.id)
        return upload

    async def _delivery(self, request: web.Request):
        try:
            delivery = await self.server.read(self.server.store.delivery, request.match_info["delivery_id"])
        except KeyError:
            raise self.server.refuse(request, 404, "no such delivery") from None
        if not self.server.access(request).sees(delivery.tenant):
            raise self.server.refuse(request, 404, "delivery of a tenant not shown", delivery_id=delivery.id)
        return delivery

    def _target(self, request: web.Request):
        tenant, name = request.match_info["tenant"], request.match_info["target"]
        self._tenant(request, tenant)
        target = next((t for t in self.server.settings().tenant(tenant).targets if t.name == name), None)
        if target is None:
            raise self.server.refuse(request, 404, "no such target", tenant=tenant, target=name[:100])
        return tenant, target

    def _admin(self, request: web.Request, action: str) -> None:
        if not self.server.access(request).admin:
            raise self.server.refuse(request, 403, f"{action} needs an admin account")

    # -- overview, holds ---------------------------------------------------------------------------------

    async def overview(self, request: web.Request) -> web.StreamResponse:
        access = self.server.access(request)
        settings = self.server.settings()
        if not access.operator:
            raise web.HTTPSeeOther(f"/tenants/{access.tenant}")
        rows = await self.server.read(queries.overview, self.server.store, settings, access.tenants(settings),
                                      queries.utc_now())  # fmt: skip
        template = "_overview_rows.html" if request.query.get("partial") == "rows" else "overview.html"
        return self.server.render(request, template, rows=rows)

    async def holds(self, request: web.Request) -> web.StreamResponse:
        access = self.server.access(request)
        settings = self.server.settings()
        held, superseded = await self.server.read(_held, self.server.store, access.tenants(settings))
        return self.server.render(request, "holds.html", held=held, superseded=superseded, decides={
            t: access.decides_holds(settings, t) for t in access.tenants(settings)})  # fmt: skip

    # -- a tenant and its uploads ------------------------------------------------------------------------

    async def tenant(self, request: web.Request) -> web.StreamResponse:
        tenant = request.match_info["tenant"]
        self._tenant(request, tenant)
        store = self.server.store
        lines = await self.server.read(queries.uploads, store, tenant)
        if request.query.get("partial") == "uploads":
            return self.server.render(request, "_uploads.html", lines=lines, tenant=tenant)
        chart = await self.server.read(queries.chart, store, tenant)
        disabled = await self.server.read(store.disabled_targets)
        config = self.server.settings().tenant(tenant)
        return self.server.render(request, "tenant.html", tenant=tenant, lines=lines, chart=chart, config=config,
                                  disabled={t: why for (n, t), why in disabled.items() if n == tenant})  # fmt: skip

    async def upload(self, request: web.Request) -> web.StreamResponse:
        upload = await self._upload(request)
        store, state_dir = self.server.store, self.server.settings().server.state_dir
        receipt = await self.server.read(queries.receipt, store, upload)
        chosen = {k: request.query.get(k, "")[:200] for k in ("code", "file", "q")}
        page = await self.server.read(queries.findings, state_dir, store, upload, chosen["code"], chosen["file"],
                                      chosen["q"], _int(request.query.get("page")), self.server.mirror)  # fmt: skip
        decides = upload.state is State.HELD and self.server.access(request).decides_holds(
            self.server.settings(), upload.tenant)  # fmt: skip
        return self.server.render(request, "upload.html", upload=upload, receipt=receipt, findings=page,
                                  chosen=chosen, decides=decides)  # fmt: skip

    async def findings_csv(self, request: web.Request) -> web.StreamResponse:
        upload = await self._upload(request)
        chosen = [request.query.get(k, "")[:200] for k in ("code", "file", "q")]
        body = await self.server.read(queries.findings_csv, self.server.settings().server.state_dir,
                                      self.server.store, upload, *chosen, self.server.mirror)  # fmt: skip
        return web.Response(body=body, content_type="text/csv", charset="utf-8", headers={
            "Content-Disposition": f'attachment; filename="findings-{upload.id}.csv"'})  # fmt: skip

    async def changes(self, request: web.Request) -> web.StreamResponse:
        upload = await self._upload(request)
        snapshot = await self.server.read(self.server.store.snapshot, upload.id)
        chosen = {k: request.query.get(k, "")[:200] for k in ("entity", "action", "q")}
        folder = await self.server.read(self.server.snapshot_folder, snapshot)
        rows = await self.server.read(queries.change_rows, snapshot, folder, chosen["entity"], chosen["action"],
                                      chosen["q"], _int(request.query.get("page")))  # fmt: skip
        return self.server.render(request, "changes.html", upload=upload, snapshot=snapshot, changes=rows,
                                  chosen=chosen)  # fmt: skip

    async def _decide(self, request: web.Request, approve: bool) -> web.StreamResponse:
        upload = await self._upload(request)
        verb = "approve" if approve else "discard"
        if not self.server.access(request).decides_holds(self.server.settings(), upload.tenant):
            raise self.server.refuse(request, 403, f"{verb} not allowed to this account", upload_id=upload.id)
        form = await request.post()
        operator = self.server.operator(request, str(form.get("reason", "")))
        store = self.server.store
        try:
            decided = await self.server.read(store.decide, upload.id, approve, operator)
        except Refused as refused:
            self.server.flash(request, f"Not done: {refused}")
            self.server.action_log(request, verb, tenant=upload.tenant, upload_id=upload.id, outcome="refused",
                                   why=str(refused))  # fmt: skip
            raise web.HTTPSeeOther(f"/uploads/{upload.id}") from None
        self.server.action_log(request, verb, tenant=upload.tenant, upload_id=upload.id, outcome=str(decided.state),
                               reason=str(form.get("reason", ""))[:500])  # fmt: skip
        if self.server.receipts is not None:
            superseded = await self.server.read(store.unanswered, upload.tenant, State.SUPERSEDED)
            for changed in [decided, *superseded]:
                await self.server.receipts.answer(changed, latest=None)
        self.server.notify(upload.tenant)
        self.server.flash(request, f"{upload.id} is now {decided.state}.")
        raise web.HTTPSeeOther(f"/uploads/{upload.id}")

    async def approve(self, request: web.Request) -> web.StreamResponse:
        return await self._decide(request, True)

    async def discard(self, request: web.Request) -> web.StreamResponse:
        return await self._decide(request, False)

    # -- targets and deliveries ----------------------------------------------------------------------------

    async def target(self, request: web.Request) -> web.StreamResponse:
        tenant, target = self._target(request)
        store = self.server.store
        listed = await self.server.read(queries.deliveries, store, tenant, target.name)
        disabled = (await self.server.read(store.disabled_targets)).get((tenant, target.name))
        clients = [c for c in await self.server.read(store.api_clients, tenant) if c.target == target.name]
        return self.server.render(request, "target.html", tenant=tenant, target=target, deliveries=listed,
                                  disabled=disabled, clients=clients,
                                  scope=_scope(target))  # fmt: skip

    async def pause(self, request: web.Request) -> web.StreamResponse:
        return await self._switch_target(request, "pause", ("paused", "already held"),
                                         ("is paused: its deliveries wait.", "was paused or disabled already."))

    async def enable(self, request: web.Request) -> web.StreamResponse:
        return await self._switch_target(request, "enable", ("enabled", "not disabled"),
                                         ("is enabled: its deliveries go out in order.", "was not paused or disabled."))

    async def _switch_target(self, request: web.Request, action: str, outcomes: tuple[str, str],
                             said: tuple[str, str]) -> web.StreamResponse:  # fmt: skip
        """Pause or enable a target (the store records it as a decision); `outcomes` and `said` are what the
        log and the page say when it was done and when there was nothing to do."""
        tenant, target = self._target(request)
        self._admin(request, action)
        switch = self.server.store.pause_target if action == "pause" else self.server.store.enable_target
        done = await self.server.read(switch, tenant, target.name, self.server.operator(request)) is not None
        self.server.action_log(request, action, tenant=tenant, target=target.name, outcome=outcomes[not done])
        self.server.flash(request, f"{target.name} {said[not done]}")
        self.server.notify(tenant)
        raise web.HTTPSeeOther(f"/tenants/{tenant}/targets/{target.name}")

    async def delivery(self, request: web.Request) -> web.StreamResponse:
        delivery = await self._delivery(request)
        config = self.server.settings().tenant(delivery.tenant)
        target = next((t for t in config.targets if t.name == delivery.target), None) if config else None
        return self.server.render(request, "delivery.html", delivery=delivery, target=target)

    async def replay(self, request: web.Request) -> web.StreamResponse:
        delivery = await self._delivery(request)
        self._admin(request, "replay")
        form = await request.post()
        force = form.get("force") == "1"
        try:
            queued = await self.server.read(self.server.store.replay_delivery, delivery.id,
                                            self.server.operator(request), force)  # fmt: skip
        except Refused as refused:
            self.server.action_log(request, "replay", tenant=delivery.tenant, delivery_id=delivery.id,
                                   outcome="refused", why=str(refused), force=force)  # fmt: skip
            self.server.flash(request, f"Not replayed: {refused}")
            raise web.HTTPSeeOther(f"/deliveries/{delivery.id}?refused=1") from None
        self.server.action_log(request, "replay", tenant=delivery.tenant, delivery_id=delivery.id, outcome="queued",
                               force=force)  # fmt: skip
        if self.server.receipts is not None:
            await self.server.receipts.refresh(queued.upload_id)
        self.server.notify(delivery.tenant)
        self.server.flash(request, f"{delivery.id} is queued again.")
        raise web.HTTPSeeOther(f"/deliveries/{delivery.id}")

    # -- API clients, settings -------------------------------------------------------------------------------

    async def api_clients(self, request: web.Request) -> web.StreamResponse:
        access = self.server.access(request)
        shown = set(access.tenants(self.server.settings()))
        clients = [c for c in await self.server.read(self.server.store.api_clients, None) if c.tenant in shown]
        return self.server.render(request, "api_clients.html", clients=clients)

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        client_id = request.match_info["client_id"]
        clients = {c.client_id: c for c in await self.server.read(self.server.store.api_clients, None)}
        client = clients.get(client_id)
        if client is None or not self.server.access(request).sees(client.tenant):
            raise self.server.refuse(request, 404, "no such API client")
        self._admin(request, "revoke")
        try:
            await self.server.read(self.server.store.revoke_api_client, client_id)
        except Refused as refused:
            self.server.flash(request, f"Not revoked: {refused}")
            raise web.HTTPSeeOther("/api-clients") from None
        self.server.action_log(request, "revoke", tenant=client.tenant, target=client.target, client_id=client_id,
                               outcome="revoked")  # fmt: skip
        self.server.flash(request, f"API client {client_id} is revoked: its tokens stop working now.")
        raise web.HTTPSeeOther("/api-clients")

    async def settings_page(self, request: web.Request) -> web.StreamResponse:
        if not self.server.access(request).operator:
            raise self.server.refuse(request, 404, "settings are for operators")
        text = await self.server.read(queries.redacted_settings, self.server.settings())
        return self.server.render(request, "settings.html", text=text)


def _scope(target) -> dict:
    """What narrows the target's roster (empty: the whole roster; a CERS target takes the rules of CERS)."""
    scope = getattr(target, "scope", None)
    return scope.model_dump(exclude_defaults=True) if scope is not None else {}


def _held(store, tenants: list[str]) -> tuple[list[tuple], list[tuple]]:
    """Each held upload with its snapshot record (the limits it crossed, what it would delete), newest first;
    and the newest SUPERSEDED_SHOWN superseded ones with what superseded them, listed briefly."""
    held = [(upload, store.snapshot(upload.id)) for upload in store.uploads_in([State.HELD], tenants, 1000)]
    superseded = store.uploads_in([State.SUPERSEDED], tenants, SUPERSEDED_SHOWN)
    return held, [(upload, store.last_detail(upload.id)) for upload in superseded]
