"""Administrator commands that act on the daemon's records: snapshots, approve, discard, rebaseline.

They open the state directory's database next to a running daemon (SQLite in WAL mode: the daemon keeps
working meanwhile), record the decision with the operator's user name and the time, and rewrite the
receipts it changes in the tenant's results/ folder. The daemon reads the tenant's current snapshot from
the database for every upload, so a decision counts from the next upload on; it reads the recorded
decisions every few seconds too, and logs each one in its own log.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import UTC, datetime, timedelta

from daemon.cli.options import add_config_option

EXIT_REFUSED = 1
EXIT_USAGE = 2
STUCK_MINUTES = 15.0  # far beyond the largest district's validation (seconds), short of a nightly upload's gap


def add_parsers(sub: argparse._SubParsersAction) -> None:
    status = sub.add_parser("status", help="each tenant's last upload, holds, outbox backlog and targets",
                            description="Per tenant: the last upload and its state, held uploads waiting for an "
                            "administrator, uploads stuck in received or validating, the outbox backlog, and "
                            "each target's last success and last error. Reads the database; works while the "
                            "daemon runs.")  # fmt: skip
    status.add_argument("tenant", metavar="TENANT", nargs="?")
    status.add_argument("--stuck-minutes", type=float, default=STUCK_MINUTES, metavar="N",
                        help=f"an upload still received or validating after N minutes is shown as stuck "
                        f"(default {STUCK_MINUTES:g})")  # fmt: skip
    status.add_argument("--format", choices=("text", "json"), default="text")
    add_config_option(status)
    status.set_defaults(func=_status)

    snaps = sub.add_parser("snapshots", help="a tenant's snapshot history with counts",
                           description="List a tenant's snapshots, newest first: the upload each came from, its "
                           "state, rows per entity and the changes against the snapshot before it. The current "
                           "one (the roster the next upload is compared with) is marked * (JSON: \"current\": "
                           "true).")  # fmt: skip
    snaps.add_argument("tenant", metavar="TENANT")
    snaps.add_argument("--format", choices=("text", "json"), default="text")
    add_config_option(snaps)
    snaps.set_defaults(func=_snapshots)

    for name, verb, text in (
        ("approve", "approve", "Apply a held upload: its snapshot becomes the tenant's current one (older held "
         "uploads of the tenant are superseded). Only the newest held upload of a tenant can be approved."),
        ("discard", "discard", "Discard a held upload: it is never applied; the current snapshot stays."),
    ):
        description = f"{text} The decision is recorded with your user name and the time. Exit status: 0 done, " \
            "1 refused, 2 unusable."
        decide = sub.add_parser(name, help=f"{verb} a held upload", description=description)
        decide.add_argument("upload_id", metavar="UPLOAD_ID")
        add_config_option(decide)
        decide.set_defaults(func=_decide, approve=name == "approve")

    rebase = sub.add_parser("rebaseline", help="take a tenant's next upload as a fresh baseline",
                            description="Take the tenant's next upload as a fresh baseline: it is diffed against "
                            "nothing (all additions, never held). Use after a change of SIS or of sourcedIds. "
                            "Needs --confirm.")  # fmt: skip
    rebase.add_argument("tenant", metavar="TENANT")
    rebase.add_argument("--confirm", action="store_true", help="yes, the next upload replaces the baseline")
    add_config_option(rebase)
    rebase.set_defaults(func=_rebaseline)

    outbox = sub.add_parser("outbox", help="deliveries to targets, newest first",
                            description="List deliveries (one per target for each accepted upload), newest first, "
                            "with their state, attempts and last error.")  # fmt: skip
    outbox.add_argument("tenant", metavar="TENANT", nargs="?")
    outbox.add_argument("--limit", type=int, default=50)
    outbox.add_argument("--format", choices=("text", "json"), default="text")
    add_config_option(outbox)
    outbox.set_defaults(func=_outbox)

    replay = sub.add_parser("replay", help="re-queue a delivery",
                            description="Queue a delivery again (a dead one after fixing its cause, or one to "
                            "send again): the running daemon sends it within [outbox] poll_seconds. Refused when "
                            "a newer delivery to the same target went out already (it would undo part of it) "
                            "unless --force. Exit status: 0 done, 1 refused, 2 unusable.")  # fmt: skip
    replay.add_argument("delivery_id", metavar="DELIVERY_ID")
    replay.add_argument("--force", action="store_true", help="replay even though newer deliveries went out")
    add_config_option(replay)
    replay.set_defaults(func=_replay)

    enable = sub.add_parser("enable-target", help="send to a target that answered 410 Gone again",
                            description="A receiver that answered 410 Gone is disabled: its deliveries wait. Once "
                            "the vendor wants them again, this enables the target; the waiting deliveries go out "
                            "in order (a dead one needs `rosterd replay`).")  # fmt: skip
    enable.add_argument("tenant", metavar="TENANT")
    enable.add_argument("target", metavar="TARGET")
    add_config_option(enable)
    enable.set_defaults(func=_enable_target)


def operator() -> str:
    """Who runs the command: the user behind sudo when there is one."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


def settings_of(args: argparse.Namespace):
    """The settings of the config given; raises SystemExit with the problems when unusable."""
    from daemon.config import ConfigError, load_settings

    try:
        return load_settings(args.config)
    except ConfigError as err:
        print(err, file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def _open(args: argparse.Namespace):
    """(settings, store) for the config given; raises SystemExit with a message when unusable."""
    settings = settings_of(args)
    database = settings.server.state_dir / "rosterd.db"
    if not settings.store.postgresql and not database.exists():
        print(f"rosterd: no database at {database}: has the daemon run with this config?", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    return settings, open_store(settings)


def open_store(settings):
    """The configured store (SQLite is made when missing); SystemExit with the reason when it cannot be used."""
    from daemon.store import StoreUnavailable
    from daemon.targets.secrets import SecretMissing

    try:
        return settings.open_store()
    except (StoreUnavailable, SecretMissing) as err:
        print(f"rosterd: the store ([store] in {settings.source}): {err}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def known_tenant(settings, name: str) -> None:
    if settings.tenant(name) is None:
        print(f"rosterd: no tenant {name!r} in {settings.source}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _snapshots(args: argparse.Namespace) -> int:
    settings, store = _open(args)
    known_tenant(settings, args.tenant)
    history = store.snapshots(args.tenant)
    current = store.current_snapshot(args.tenant)
    store.close()
    current_id = current.upload_id if current is not None else None
    if args.format == "json":
        rows = [{"upload_id": r.upload_id, "current": r.upload_id == current_id, "file": u.name, "sha256": u.sha256,
                 "state": str(u.state), "version": r.version, "created_at": r.created_at,
                 "base_upload_id": r.base_upload_id, "rows": r.rows, "changes": r.changes, "holds": r.holds,
                 "pruned": r.pruned_at is not None}
                for r, u in history]  # fmt: skip
        print(json.dumps(rows, indent=2))
        return 0
    if not history:
        print(f"{args.tenant} has no snapshots yet")
        return 0
    print(f"  {'upload':<27} {'state':<11} {'created':<24} {'users':>8} {'enrollments':>12} {'classes':>8} "
          f"{'added':>8} {'updated':>8} {'deleted':>8}  file")  # fmt: skip
    for record, upload in history:
        totals = {action: sum(c[action] for c in record.changes.values()) for action in ("added", "updated", "deleted")}
        state = str(upload.state) + (" (pruned)" if record.pruned_at else "")
        mark = "*" if record.upload_id == current_id else " "
        print(f"{mark} {record.upload_id:<27} {state:<11} {record.created_at:<24} {record.rows.get('users', 0):>8} "
              f"{record.rows.get('enrollments', 0):>12} {record.rows.get('classes', 0):>8} {totals['added']:>8} "
              f"{totals['updated']:>8} {totals['deleted']:>8}  {upload.name}")  # fmt: skip
    if current_id is not None:
        print("* current: the roster in use, which the next upload is compared with")
    return 0


def _decide(args: argparse.Namespace) -> int:
    from daemon import receipts
    from daemon.logs import configure_logging, get_logger
    from daemon.store import Refused, State

    settings, store = _open(args)
    who = operator()
    try:
        upload = store.decide(args.upload_id, approve=args.approve, operator=who)
    except Refused as refused:
        print(f"rosterd: {refused}", file=sys.stderr)
        store.close()
        return EXIT_REFUSED
    configure_logging(stream=sys.stderr)
    event = "upload.approved" if args.approve else "upload.discarded"
    get_logger().info(event, tenant=upload.tenant, upload_id=upload.id, operator=who, at=upload.updated_at)
    tenant = settings.tenant(upload.tenant)
    if tenant is not None:  # receipts of a tenant no longer configured are left as they are
        results = settings.tenant_root(tenant.name) / "results"
        mirror = settings.open_mirror()  # replicas: the receipts go to the shared bucket too, which they serve
        newest = store.recent(upload.tenant, 1)
        for changed in [upload, *store.unanswered(upload.tenant, State.SUPERSEDED)]:
            is_newest = bool(newest) and newest[0].id == changed.id
            receipts.write(results, receipts.from_store(store, changed), settings.intake.receipts_kept, is_newest,
                           mirror)  # fmt: skip
            store.mark_answered(changed.id)
    store.close()
    print(f"{upload.id} ({upload.tenant}, {upload.name}) is now {upload.state}, by {who} at {upload.updated_at}")
    return 0


def _rebaseline(args: argparse.Namespace) -> int:
    from daemon.logs import configure_logging, get_logger

    if not args.confirm:
        print("rosterd rebaseline: the next upload of this tenant will be taken as a fresh baseline (all "
              "additions, never held); run again with --confirm to go ahead", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    settings, store = _open(args)
    known_tenant(settings, args.tenant)
    who = operator()
    at = store.request_rebaseline(args.tenant, who)
    store.close()
    configure_logging(stream=sys.stderr)
    get_logger().info("tenant.rebaseline_requested", tenant=args.tenant, operator=who, at=at)
    print(f"the next upload of {args.tenant} will be taken as a fresh baseline (requested by {who} at {at})")
    return 0


def _outbox(args: argparse.Namespace) -> int:
    settings, store = _open(args)
    if args.tenant is not None:
        known_tenant(settings, args.tenant)
    listed = store.deliveries(args.tenant, limit=args.limit)
    disabled = store.disabled_targets()
    store.close()
    for (tenant, target), (when, why) in sorted(disabled.items()):
        if args.tenant in (None, tenant):
            print(f"target {target} of {tenant} is DISABLED since {when}: {why} (rosterd enable-target {tenant} "
                  f"{target})", file=sys.stderr)  # fmt: skip
    if args.format == "json":
        print(json.dumps([_delivery_row(d) for d in listed], indent=2))
        return 0
    if not listed:
        print("no deliveries" + (f" for {args.tenant}" if args.tenant else ""))
        return 0
    print(f"{'delivery':<27} {'tenant':<16} {'target':<10} {'upload':<27} {'state':<10} {'tries':>5}  "
          "updated / last error")  # fmt: skip
    for d in listed:
        note = d.last_error if d.last_error and d.state != "delivered" else ""
        print(f"{d.id:<27} {d.tenant:<16} {d.target:<10} {d.upload_id:<27} {d.state:<10} {d.attempts:>5}  "
              f"{d.updated_at}{'  ' + note if note else ''}")  # fmt: skip
    return 0


def _delivery_row(d) -> dict:
    return {"delivery_id": d.id, "tenant": d.tenant, "target": d.target, "upload_id": d.upload_id,
            "state": str(d.state), "attempts": d.attempts, "idempotency_key": d.idempotency_key,
            "created_at": d.created_at, "updated_at": d.updated_at, "next_attempt_at": d.next_attempt_at,
            "delivered_at": d.delivered_at, "against_upload_id": d.base_upload_id, "last_error": d.last_error,
            "result": d.result}  # fmt: skip


def _replay(args: argparse.Namespace) -> int:
    from daemon.logs import configure_logging, get_logger
    from daemon.store import Refused

    _settings, store = _open(args)
    who = operator()
    try:
        delivery = store.replay_delivery(args.delivery_id, who, force=args.force)
    except Refused as refused:
        print(f"rosterd: {refused}", file=sys.stderr)
        store.close()
        return EXIT_REFUSED
    store.close()
    configure_logging(stream=sys.stderr)
    get_logger().info("delivery.replayed", tenant=delivery.tenant, target=delivery.target,
                      upload_id=delivery.upload_id, delivery_id=delivery.id, operator=who,
                      at=delivery.updated_at)  # fmt: skip
    print(f"{delivery.id} ({delivery.tenant} -> {delivery.target}, upload {delivery.upload_id}) is queued again, by "
          f"{who} at {delivery.updated_at}")
    return 0


def _enable_target(args: argparse.Namespace) -> int:
    from daemon.logs import configure_logging, get_logger

    settings, store = _open(args)
    known_tenant(settings, args.tenant)
    who = operator()
    at = store.enable_target(args.tenant, args.target, who)
    store.close()
    if at is None:
        print(f"rosterd: target {args.target} of {args.tenant} is not disabled", file=sys.stderr)
        return EXIT_REFUSED
    configure_logging(stream=sys.stderr)
    get_logger().info("target.enabled", tenant=args.tenant, target=args.target, operator=who, at=at)
    print(f"target {args.target} of {args.tenant} is enabled again, by {who} at {at}")
    return 0


def target_label(target) -> str:
    """A target as `rosterd status` names it: its kind, then its name when that is not just the kind again
    (`webhook lms-vendor`, `sftp nightly`, `cers`)."""
    return target.type if target.name == target.type else f"{target.type} {target.name}"


def _status(args: argparse.Namespace) -> int:
    from daemon.store import DeliveryState, stamp

    settings, store = _open(args)
    if args.tenant is not None:
        known_tenant(settings, args.tenant)
    names = [args.tenant] if args.tenant else [t.name for t in settings.tenants]
    counts = store.counts()
    disabled = store.disabled_targets()
    since = stamp(datetime.now(UTC) - timedelta(minutes=args.stuck_minutes))
    stuck = store.stuck(since)
    report = []
    clients = store.api_clients(None)
    for name in names:
        last = store.recent(name, 1)
        held = [u for u in store.recent(name, 200) if u.state == "held"]
        targets = []
        for target in settings.tenant(name).targets:
            good, bad = store.target_history(name, target.name)
            backlog = sum(n for (t, g, state), n in counts["deliveries"].items()
                          if t == name and g == target.name and DeliveryState(state).open)  # fmt: skip
            targets.append({
                "target": target.name, "type": target.type, "label": target_label(target), "backlog": backlog,
                "disabled": disabled.get((name, target.name), (None, None))[1],
                "last_success": good.delivered_at if good else None,
                "last_success_upload_id": good.upload_id if good else None,
                "last_error": bad.last_error if bad else None, "last_error_at": bad.updated_at if bad else None,
            })  # fmt: skip
            if target.type == "api":  # its publication is its delivery; its clients pull it
                targets[-1]["clients"] = [
                    {"client_id": c.client_id, "created_at": c.created_at, "last_used_at": c.last_used_at,
                     "revoked_at": c.revoked_at}
                    for c in clients if c.tenant == name and c.target == target.name
                ]  # fmt: skip
        report.append({
            "tenant": name,
            "last_upload": {"upload_id": last[0].id, "file": last[0].name, "state": str(last[0].state),
                            "received_at": last[0].received_at} if last else None,
            "held": [{"upload_id": u.id, "file": u.name, "received_at": u.received_at} for u in held],
            "stuck": [{"upload_id": u.id, "file": u.name, "state": str(u.state), "since": u.updated_at}
                      for u in stuck if u.tenant == name],
            "uploads_by_state": {state: n for (t, state), n in sorted(counts["uploads"].items()) if t == name},
            "targets": targets,
        })  # fmt: skip
    store.close()
    if args.format == "json":
        print(json.dumps(report, indent=2))
        return 0
    for tenant in report:
        last = tenant["last_upload"]
        print(f"{tenant['tenant']}")
        print("  last upload   " + (f"{last['upload_id']} {last['state']} ({last['file']}, {last['received_at']})"
                                    if last else "none yet"))  # fmt: skip
        for upload in tenant["stuck"]:
            print(f"  STUCK         {upload['upload_id']} ({upload['file']}) {upload['state']} since {upload['since']}"
                  " (the daemon retries it; see its log for upload.failed)")  # fmt: skip
        for held in tenant["held"]:
            print(f"  HELD          {held['upload_id']} ({held['file']}): rosterd approve / discard {held['upload_id']}")
        for t in tenant["targets"]:
            state = f"DISABLED ({t['disabled']})" if t["disabled"] else f"backlog {t['backlog']}"
            print(f"  target {t['label']:<20} {state}; last success "
                  f"{t['last_success'] or 'never'}" + (f"; last error {t['last_error_at']}: {t['last_error']}"
                                                         if t["last_error"] else ""))  # fmt: skip
            for c in t.get("clients", ()):
                use = f"revoked {c['revoked_at']}" if c["revoked_at"] else f"last used {c['last_used_at'] or 'never'}"
                print(f"    api client {c['client_id']}: {use}")
            if "clients" in t and not t["clients"]:
                print(f"    no api client yet: rosterd api-client add {tenant['tenant']} {t['target']}")
        print()
    return 0
