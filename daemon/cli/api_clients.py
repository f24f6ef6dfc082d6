"""`rosterd api-client add | revoke | list`: the clients a vendor uses to pull a tenant's api target.

`add` prints the new client's id and secret once, on standard output and nowhere else: the database keeps an
argon2id hash of the secret, and nothing is logged. A lost secret is not recoverable: revoke the client and add
another. `revoke` takes effect at once, in the running daemon too (every token of the client stops working
with the revocation's commit). The commands open the state directory's database next to a running daemon.
"""

from __future__ import annotations

import argparse
import json
import sys

from daemon.cli.admin import EXIT_REFUSED, EXIT_USAGE, known_tenant, open_store, settings_of
from daemon.cli.options import action_parser, action_parsers


def add_parser(sub: argparse._SubParsersAction) -> None:
    actions = action_parsers(sub, "api-client", "add, revoke or list the clients of OneRoster API targets",
                             "Manage the client ids and secrets vendors use to pull a tenant's `type = \"api\"` "
                             "target over the OneRoster REST API.")  # fmt: skip

    add = action_parser(actions, "add", _add, "make a client and print its id and secret (once)",
                        "Make a client of TENANT's api target TARGET and print its client id and secret. The secret "
                        "is shown this once: only its argon2id hash is stored. Exit status: 0 made, 2 unknown tenant, "
                        "or a target that is not an api target.")  # fmt: skip
    add.add_argument("tenant", metavar="TENANT")
    add.add_argument("target", metavar="TARGET", help="the name of one of the tenant's type = \"api\" targets")

    revoke = action_parser(actions, "revoke", _revoke, "end a client and every token it holds, at once",
                           "Revoke a client: it gets no new token, and the tokens it holds stop working at once. "
                           "Exit status: 0 revoked, 1 unknown or revoked already.")  # fmt: skip
    revoke.add_argument("client_id", metavar="CLIENT_ID")

    listing = action_parser(actions, "list", _list, "list clients (never their secrets)",
                            "List API clients, of one tenant or all: id, target, when made, last used and revoked. "
                            "Secrets are never shown (they are not kept).")  # fmt: skip
    listing.add_argument("tenant", metavar="TENANT", nargs="?")
    listing.add_argument("--format", choices=("text", "json"), default="text")


def _add(args: argparse.Namespace) -> int:
    from daemon.store import Refused
    from daemon.passwords import hash_secret
    from daemon.targets.api.auth import new_client

    settings = settings_of(args)
    known_tenant(settings, args.tenant)
    target = next((t for t in settings.tenant(args.tenant).targets if t.name == args.target), None)
    if target is None:
        print(f"rosterd api-client add: tenant {args.tenant!r} has no target {args.target!r}", file=sys.stderr)
        return EXIT_USAGE
    if target.type != "api":
        print(f"rosterd api-client add: {args.tenant}'s target {args.target!r} is a {target.type} target; clients "
              "are for type = \"api\" targets", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    client_id, secret = new_client()
    store = open_store(settings)
    try:
        client = store.add_api_client(client_id, args.tenant, args.target, hash_secret(secret))
    except Refused as refused:  # a random id taken already: never in practice
        print(f"rosterd api-client add: {refused}", file=sys.stderr)
        return EXIT_REFUSED
    finally:
        store.close()
    print(f"client_id: {client.client_id}\nclient_secret: {secret}")
    print(f"rosterd api-client add: a client of {client.tenant}/{client.target} (OneRoster "
          f"{' and '.join(target.versions)}); the secret is shown only now: give it to the vendor, and if it is "
          "lost, revoke the client and add another", file=sys.stderr)  # fmt: skip
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from daemon.store import Refused

    store = open_store(settings_of(args))
    try:
        client = store.revoke_api_client(args.client_id)
    except Refused as refused:
        print(f"rosterd api-client revoke: {refused}", file=sys.stderr)
        return EXIT_REFUSED
    finally:
        store.close()
    print(f"{client.client_id} ({client.tenant}/{client.target}) revoked at {client.revoked_at}; its tokens no "
          "longer work")  # fmt: skip
    return 0


def _list(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if args.tenant is not None:
        known_tenant(settings, args.tenant)
    store = open_store(settings)
    try:
        clients = store.api_clients(args.tenant)
    finally:
        store.close()
    if args.format == "json":
        print(json.dumps([{"client_id": c.client_id, "tenant": c.tenant, "target": c.target,
                           "created_at": c.created_at, "last_used_at": c.last_used_at, "revoked_at": c.revoked_at}
                          for c in clients], indent=2))  # fmt: skip
        return 0
    if not clients:
        print("no api clients" + (f" for {args.tenant}" if args.tenant else ""))
        return 0
    width = max(len(c.client_id) for c in clients)
    for c in clients:
        state = f"revoked {c.revoked_at}" if c.revoked_at else f"last used {c.last_used_at or 'never'}"
        print(f"{c.client_id:<{width}}  {c.tenant}/{c.target}  made {c.created_at}  {state}")
    return 0
