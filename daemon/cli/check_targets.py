"""`rosterd check-targets`: can each configured target be reached with its credential, and as whom?

For a CERS target: a Cognito token is fetched and `GET /imports/user` asked who the credential is and what it
may do (CERS's vendor document asks for this output in support tickets). Nothing is uploaded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from daemon.cli.admin import known_tenant, settings_of
from daemon.cli.options import add_config_option


def add_parser(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser("check-targets", help="log in to each target and show who the credential is",
                           description="For each delivery target of a tenant (or of every tenant): fetch a token "
                           "and ask the target who the credential is and what it may do. Nothing is sent. Exit "
                           "status: 0 every target answered, 1 one or more did not, 2 unusable.")  # fmt: skip
    check.add_argument("tenant", metavar="TENANT", nargs="?")
    add_config_option(check)
    check.set_defaults(func=_check_targets)


def _check_targets(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    tenants = settings.tenants
    if args.tenant is not None:
        known_tenant(settings, args.tenant)
        tenants = [settings.tenant(args.tenant)]
    # An api target is pulled by its vendor: there is nothing of ours to log in to.
    pairs = [(t.name, target) for t in tenants for target in t.targets if target.type != "api"]
    if not pairs:
        print("no targets configured" + (f" for {args.tenant}" if args.tenant else ""))
        return 0
    results = asyncio.run(_check_all(pairs))
    return 0 if all(results) else 1


async def _check_all(pairs) -> list[bool]:
    checks = {"cers": _check_cers, "webhook": _check_webhook, "sftp": _check_sftp}
    return [await checks[target.type](tenant, target) for tenant, target in pairs]


async def _check_webhook(tenant: str, settings) -> bool:
    """Standard Webhooks has no probe a receiver must answer, so nothing is sent: the signing secret is read."""
    print(f"{tenant} -> {settings.name} (webhook, {settings.url})")
    try:
        from daemon.targets.webhook import signing_key

        signing_key(settings.signing.read_secret())
    except Exception as err:  # SecretMissing, or a whsec_ value that is not base64
        print(f"  FAILED: the signing secret cannot be used: {err}\n")
        return False
    print(f"  signing secret: readable ({settings.signing.secret_source}); nothing is sent to check the URL\n")
    return True


async def _check_sftp(tenant: str, settings) -> bool:
    """Log in with the pinned host key and the configured login, and list the remote folder."""
    from daemon.targets.sftp_push import SftpPush

    print(f"{tenant} -> {settings.name} (sftp, {settings.auth.username}@{settings.host}:{settings.port})")
    listed = await SftpPush(tenant, settings, Path("/nonexistent")).probe()
    if isinstance(listed, str):
        print(f"  FAILED: {listed}\n")
        return False
    print(f"  logged in; host key matches the pinned one; {settings.remote_dir} holds {listed} entries\n")
    return True


async def _check_cers(tenant: str, settings) -> bool:
    from daemon.targets.cers.target import CersGroupsTarget

    heading = f"{tenant} -> {settings.name} (CERS, {settings.user_endpoint})"
    if not settings.cognito.configured:
        print(f"{heading}\n  no credential configured (dry run: files are written to results/cers/ only)\n")
        return settings.dry_run
    target = CersGroupsTarget(tenant, settings)
    try:
        sent = await target.client().whoami()
    finally:
        await target.close()
    mode = "dry run: nothing is sent" if settings.dry_run else "live"
    if sent.record is None:
        print(f"{heading} [{mode}]\n  FAILED: {sent.error}\n")
        return False
    who = sent.record
    authorities = [a.get("authority", a) if isinstance(a, dict) else a for a in who.get("authorities") or []]
    grants = (who.get("tenancyChain") or {}).get("grants") or []
    can_write = any("GROUP_WRITE" in str(a) or "GROUP_ADMIN" in str(a) for a in authorities)
    print(f"{heading} [{mode}]\n  credential: {who.get('username')}\n  authorities: {', '.join(map(str, authorities)) or 'none'}")
    for grant in grants:
        print(f"  grant: {json.dumps(grant, sort_keys=True)}")
    print("  may write student groups: " + ("yes" if can_write else "NO (needs GROUP_WRITE via the GROUP_ADMIN role)"))
    print()
    return can_write
