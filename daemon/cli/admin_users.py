"""`rosterd admin-user add | list | disable | passwd | totp`: the accounts that log in to the admin console.

Operators are `admin` (sees and does everything) or `viewer` (only sees); `--tenant` makes a district account,
bound to that one tenant. A password is read from standard input with `--password-stdin` (one line), else asked
for twice without echo; only its argon2id hash is stored. With `--totp` (or `totp NAME --on`) the otpauth:// URI
and the secret are printed once, on standard output, for an authenticator app. A listing shows neither hashes
nor secrets. The commands open the state directory's database next to a running daemon.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from daemon.cli.admin import EXIT_REFUSED, EXIT_USAGE, known_tenant, open_store, settings_of
from daemon.cli.options import action_parser, action_parsers


def add_parser(sub: argparse._SubParsersAction) -> None:
    actions = action_parsers(sub, "admin-user", "add, list, disable admin console accounts; set passwords and TOTP",
                             "Manage who logs in to the admin console: operators (admin or viewer) and district "
                             "accounts bound to one tenant.")  # fmt: skip

    add = _action(actions, "add", _add, "make an account",
                  "Make an account NAME (1 to 64 of a-z, 0-9, '.', '_', '-'): an operator with --role (default "
                  "admin), or a district account of one tenant with --tenant. Exit status: 0 made, 2 bad name, "
                  "unknown tenant or --role with --tenant, 1 name taken or passwords that differ.")  # fmt: skip
    add.add_argument("--role", choices=("admin", "viewer"), help="an operator's role (default: admin)")
    add.add_argument("--tenant", metavar="TENANT", help="make a district account that sees only this tenant")
    add.add_argument("--totp", action="store_true", help="require a code from an authenticator app at login")
    _add_password_stdin(add)

    listing = _action(actions, "list", _list, "list accounts (never hashes or secrets)",
                      "List accounts: name, role, tenant, TOTP on or off, when made and when disabled.", named=False)
    listing.add_argument("--format", choices=("text", "json"), default="text")
    _action(actions, "disable", _disable, "stop an account from logging in",
            "Disable an account: it can no longer log in; its name stays taken. Exit status: 0 disabled, 1 unknown "
            "or disabled already.")  # fmt: skip
    passwd = _action(actions, "passwd", _passwd, "set an account's password",
                     "Set NAME's password. Exit status: 0 set, 1 unknown account or passwords that differ.")
    _add_password_stdin(passwd)
    totp = _action(actions, "totp", _totp, "turn an account's TOTP on (a new secret) or off",
                   "--on gives NAME a new TOTP secret and prints it once with its otpauth:// URI; --off removes it. "
                   "Exit status: 0 done, 1 unknown account.")  # fmt: skip
    switch = totp.add_mutually_exclusive_group(required=True)
    switch.add_argument("--on", action="store_true")
    switch.add_argument("--off", action="store_true")


def _action(actions: argparse._SubParsersAction, name: str, func, help: str, description: str,
            named: bool = True) -> argparse.ArgumentParser:  # fmt: skip
    """An ACTION of `admin-user`, taking NAME (unless `named` is False) and --config."""
    parser = action_parser(actions, name, func, help, description)
    if named:
        parser.add_argument("name", metavar="NAME")
    return parser


def _add_password_stdin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from standard input (one line) instead of asking twice")  # fmt: skip


def _password(args: argparse.Namespace) -> str | None:
    """The new password, or None (said on standard error) when empty or the two typed differ."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("password again: ") != password:
            print(f"rosterd admin-user {args.action}: the passwords differ", file=sys.stderr)
            return None
    if not password:
        print(f"rosterd admin-user {args.action}: an empty password is refused", file=sys.stderr)
        return None
    return password


def _print_totp(name: str, secret: str) -> None:
    from daemon.console.accounts import provisioning_uri

    print(f"totp_uri: {provisioning_uri(name, secret)}\ntotp_secret: {secret}")
    print(f"rosterd admin-user: add this to {name}'s authenticator app now (the URI as a QR code, or the secret "
          "typed); it is shown only once", file=sys.stderr)  # fmt: skip


def _add(args: argparse.Namespace) -> int:
    from daemon.console.accounts import new_totp_secret
    from daemon.passwords import hash_secret
    from daemon.names import check_account_name

    try:
        check_account_name(args.name)
    except ValueError as err:
        print(f"rosterd admin-user add: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.tenant is not None and args.role is not None:
        print("rosterd admin-user add: --tenant makes a district account, which has no --role", file=sys.stderr)
        return EXIT_USAGE
    settings = settings_of(args)
    if args.tenant is not None:
        known_tenant(settings, args.tenant)
    role = "district" if args.tenant is not None else args.role or "admin"
    password = _password(args)
    if password is None:
        return EXIT_REFUSED
    secret = new_totp_secret() if args.totp else None
    user = _change(args, lambda store: store.add_admin_user(args.name, role, args.tenant, hash_secret(password),
                                                            secret))  # fmt: skip
    if user is None:
        return EXIT_REFUSED
    print(f"rosterd admin-user add: {user.name} ({_role_text(user)}) made", file=sys.stderr)
    if secret is not None:
        _print_totp(user.name, secret)
    return 0


def _list(args: argparse.Namespace) -> int:
    users = _change(args, lambda store: store.admin_users())
    if args.format == "json":
        print(json.dumps([{"name": u.name, "role": u.role, "tenant": u.tenant, "totp": u.totp,
                           "created_at": u.created_at, "disabled_at": u.disabled_at} for u in users],
                         indent=2))  # fmt: skip
        return 0
    if not users:
        print("no admin users")
        return 0
    width = max(len(u.name) for u in users)
    for u in users:
        state = f"disabled {u.disabled_at}" if u.disabled_at else "active"
        print(f"{u.name:<{width}}  {_role_text(u)}  totp {'on' if u.totp else 'off'}  made {u.created_at}  {state}")
    return 0


def _disable(args: argparse.Namespace) -> int:
    user = _change(args, lambda store: store.disable_admin_user(args.name))
    if user is None:
        return EXIT_REFUSED
    print(f"{user.name} disabled at {user.disabled_at}; it can no longer log in")
    return 0


def _passwd(args: argparse.Namespace) -> int:
    from daemon.passwords import hash_secret

    if _change(args, lambda store: store.admin_user(args.name)) is None:  # asked before the password is typed
        print(f"rosterd admin-user passwd: no admin user {args.name}", file=sys.stderr)
        return EXIT_REFUSED
    password = _password(args)
    if password is None:
        return EXIT_REFUSED
    if _change(args, lambda store: store.set_admin_password(args.name, hash_secret(password))) is None:
        return EXIT_REFUSED
    print(f"{args.name}'s password changed")
    return 0


def _totp(args: argparse.Namespace) -> int:
    from daemon.console.accounts import new_totp_secret

    secret = new_totp_secret() if args.on else None
    user = _change(args, lambda store: store.set_admin_totp(args.name, secret))
    if user is None:
        return EXIT_REFUSED
    if secret is None:
        print(f"{user.name}: TOTP off; the password alone logs in")
    else:
        _print_totp(user.name, secret)
    return 0


def _change(args: argparse.Namespace, change):
    """What `change(store)` returns with the state directory's store, or None when the store refused (said on
    standard error)."""
    from daemon.store import Refused

    store = open_store(settings_of(args))
    try:
        return change(store)
    except Refused as refused:
        print(f"rosterd admin-user {args.action}: {refused}", file=sys.stderr)
        return None
    finally:
        store.close()


def _role_text(user) -> str:
    return f"district of {user.tenant}" if user.role == "district" else user.role
