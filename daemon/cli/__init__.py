"""The `rosterd` command line."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from daemon.cli import admin, admin_users, api_clients, check_targets, migrate
from daemon.cli.options import add_config_option
from daemon.oneroster.codes import CODES

EXIT_ACCEPTED, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # 141, as a shell reports a command its reader stopped reading


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rosterd",
        description="rosterd takes OneRoster CSV zips from school information systems over SFTP, validates "
        "them, keeps snapshots and delivers the changes to CERS and licence targets.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    srv = sub.add_parser(
        "serve",
        help="run the daemon: SFTP drop folders, validation and receipts",
        description="Run rosterd: an SFTP server that gives each tenant an inbox/ to upload OneRoster zips to and "
        "a results/ folder with a receipt for each upload. Logs are JSON lines on stdout (pretty on a terminal). "
        "Stops cleanly on SIGTERM or Ctrl-C.",
    )
    add_config_option(srv)
    srv.set_defaults(func=_serve)

    val = sub.add_parser(
        "validate",
        help="check a OneRoster 1.1/1.2 zip and report every finding",
        description="Check a OneRoster 1.1 or 1.2 CSV zip (bulk or delta) the way the daemon does before it takes "
        "an upload, and report every finding with its code, file, row, column and value. "
        "Exit status: 0 accepted (warnings allowed), 1 rejected, 2 unusable arguments or unreadable path.",
    )
    val.add_argument("path", metavar="PATH.zip", help="the zip to check")
    val.add_argument("--strict", action="store_true",
                     help="treat every deviation from the spec as an error (default: lenient, which accepts "
                     "documented real-world deviations such as TRUE/FALSE or a top-level folder with a warning)")  # fmt: skip
    val.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    val.add_argument("--max-dropped-share", type=float, default=0.01, metavar="FRACTION",
                     help="reject when a file loses more than this share of its rows to errors (default: 0.01)")  # fmt: skip
    val.add_argument("--max-total-size", type=int, default=4 * 1024**3, metavar="BYTES",
                     help="reject zips whose entries uncompress to more than this (default: 4 GiB)")  # fmt: skip
    val.set_defaults(func=_validate)

    dif = sub.add_parser(
        "diff",
        help="show what changed between two OneRoster zips (offline)",
        description="Validate two OneRoster zips and show the change set from OLD to NEW as the daemon works it "
        "out: per entity, the rows added, updated (with every changed field, old and new) and deleted, keyed by "
        "sourcedId. OLD stands for the last snapshot and must hold bulk files only; NEW may be a bulk, delta or "
        "mixed package, and is applied to OLD (a bulk file replaces its entity, a delta file upserts and deletes "
        "rows, files NEW does not hold are carried over). Values are compared after the validator's "
        "normalisation and status and dateLastModified are left out, so a cosmetic re-export shows no changes. "
        "Exit status: 0 compared (with or without changes), 1 a package was rejected (or NEW leaves references "
        "dangling once applied to OLD), 2 unusable arguments, an unreadable path, or delta files in OLD.",
    )
    dif.add_argument("old", metavar="OLD.zip", help="the earlier package (bulk)")
    dif.add_argument("new", metavar="NEW.zip", help="the later package (bulk, delta or mixed)")
    dif.add_argument("--format", choices=("text", "json"), default="text",
                     help="text: a table of counts and example rows; json: {\"entities\": {ENTITY: {\"added\": N, "
                     "\"updated\": N, \"deleted\": N}}, \"samples\": {...}} (default: text)")  # fmt: skip
    dif.add_argument("--strict", action="store_true", help="validate both packages in strict mode (default: lenient)")
    dif.add_argument("--samples", type=int, default=3, metavar="N",
                     help="example rows shown per entity and action (default: 3)")  # fmt: skip
    dif.set_defaults(func=_diff)

    codes = sub.add_parser("codes", help="list every finding code and what it means",
                           description="List every finding code rosterd can report, with its meaning.")  # fmt: skip
    codes.set_defaults(func=_codes)
    _add_tenant_parsers(sub)
    admin.add_parsers(sub)
    check_targets.add_parser(sub)
    api_clients.add_parser(sub)
    admin_users.add_parser(sub)
    migrate.add_parser(sub)
    return parser


def _add_tenant_parsers(sub: argparse._SubParsersAction) -> None:
    tenant = sub.add_parser("tenant", help="add a tenant to a config file, or list its tenants",
                            description="Manage the [[tenants]] entries of a rosterd config file.")  # fmt: skip
    actions = tenant.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    add = actions.add_parser(
        "add",
        help="append a tenant entry, with its password hashed",
        description="Append a [[tenants]] entry to an existing config file. The password is read from standard "
        "input and only its argon2id hash is written. The file is checked as a whole before it is replaced, "
        "and left unchanged if the result would be invalid or the name is taken. "
        "Exit status: 0 added, 1 refused (invalid config or duplicate name), 2 unusable arguments or files.",
    )
    add.add_argument("name", metavar="NAME", help="the tenant's SFTP user name (a-z, 0-9, _ and -)")
    add_config_option(add)
    add.add_argument("--key", action="append", default=[], metavar="FILE",
                     help="an OpenSSH public key file (.pub or authorized_keys lines); repeatable")  # fmt: skip
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from stdin (one line; on a terminal: asked twice, not echoed)")  # fmt: skip
    add.add_argument("--network", action="append", default=[], metavar="CIDR",
                     help="a source network the tenant may log in from; repeat for more (default: any)")  # fmt: skip
    add.set_defaults(func=_tenant_add)

    listing = actions.add_parser("list", help="list tenants and how each logs in (never the secrets)",
                                 description="List the tenants of a config file and how each can log in.")  # fmt: skip
    add_config_option(listing)
    listing.set_defaults(func=_tenant_list)


def _serve(args: argparse.Namespace) -> int:
    from daemon.config import ConfigError, load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as err:
        print(f"rosterd serve: {err}", file=sys.stderr)
        return EXIT_USAGE
    import uvloop  # libuv's event loop: socket work for SSH packets costs less than with asyncio's own

    from daemon.app import StartupError, serve

    try:
        uvloop.run(serve(settings))
    except StartupError as err:
        print(f"rosterd serve: {err}", file=sys.stderr)
        return 1
    return 0


def _validate(args: argparse.Namespace) -> int:
    from daemon.oneroster.findings import Mode
    from daemon.oneroster.report import render_json, render_text
    from daemon.oneroster.validate import ValidateOptions, validate_package
    from daemon.oneroster.zipread import ZipLimits

    path = Path(args.path)
    if not path.is_file():
        print(f"rosterd validate: {path}: no such file", file=sys.stderr)
        return EXIT_USAGE
    try:
        with path.open("rb"):
            pass
    except OSError as err:
        print(f"rosterd validate: {path}: {err.strerror}", file=sys.stderr)
        return EXIT_USAGE
    if not 0 <= args.max_dropped_share <= 1:
        print("rosterd validate: --max-dropped-share must be between 0 and 1", file=sys.stderr)
        return EXIT_USAGE
    options = ValidateOptions(
        mode=Mode.STRICT if args.strict else Mode.LENIENT,
        limits=ZipLimits(max_total_bytes=args.max_total_size),
        max_dropped_share=args.max_dropped_share,
        progress=_progress if sys.stderr.isatty() else None,
    )
    result = validate_package(path, options)
    if options.progress:
        print("\r\033[K", end="", file=sys.stderr)
    out = render_json(result) + "\n" if args.format == "json" else render_text(result, str(path))
    sys.stdout.write(out)
    return EXIT_ACCEPTED if result.accepted else EXIT_REJECTED


def _diff(args: argparse.Namespace) -> int:
    """`rosterd diff OLD.zip NEW.zip`: both validated, NEW merged onto OLD's snapshot, the change set shown."""
    import json

    from daemon.snapshots.changes import render_text
    from daemon.snapshots.diff import DeltaWithoutSnapshot, check_snapshot_references, diff_snapshots, merge_package
    from daemon.oneroster.findings import Mode
    from daemon.oneroster.validate import ValidateOptions, validate_package

    paths = {"OLD": Path(args.old), "NEW": Path(args.new)}
    for path in paths.values():
        problem = "no such file" if not path.is_file() else _unreadable(path)
        if problem:
            print(f"rosterd diff: {path}: {problem}", file=sys.stderr)
            return EXIT_USAGE
    if args.samples < 0:
        print("rosterd diff: --samples must not be negative", file=sys.stderr)
        return EXIT_USAGE
    mode = Mode.STRICT if args.strict else Mode.LENIENT
    options = ValidateOptions(mode=mode, progress=_progress if sys.stderr.isatty() else None)
    rosters = {}
    for label, path in paths.items():
        result = validate_package(path, options)
        if options.progress:
            print("\r\033[K", end="", file=sys.stderr)
        if not result.accepted:
            _print_rejected(path, f"{label} was rejected", result.findings.counts, args.format)
            return EXIT_REJECTED
        rosters[label] = result.roster
    try:
        before = merge_package(None, rosters["OLD"])
    except DeltaWithoutSnapshot as exc:
        print(f"rosterd diff: {paths['OLD']}: {exc.code}: OLD holds delta files ({', '.join(exc.entities)}); give a "
              "bulk package as OLD", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    after = merge_package(before, rosters["NEW"])
    dangling = check_snapshot_references(after, rosters["NEW"].version, rosters["NEW"], mode=mode)
    if dangling.errors:
        _print_rejected(paths["NEW"], "NEW leaves references dangling once applied to OLD", dangling.counts,
                        args.format)  # fmt: skip
        return EXIT_REJECTED
    changes = diff_snapshots(before, after)
    if args.format == "json":
        print(json.dumps({"entities": changes.counts(), "samples": changes.samples(args.samples)}, indent=2,
                         ensure_ascii=False))  # fmt: skip
    else:
        versions = " and ".join(dict.fromkeys(r.version for r in rosters.values()))
        print(f"{paths['OLD']} -> {paths['NEW']} (OneRoster {versions}): {changes.total():,} changed rows\n")
        sys.stdout.write(render_text(changes, args.samples))
    return 0


def _unreadable(path: Path) -> str | None:
    try:
        with path.open("rb"):
            return None
    except OSError as err:
        return err.strerror


def _print_rejected(path: Path, why: str, counts: dict[str, int], fmt: str) -> None:
    """The counts by code of a rejected package; `rosterd validate` shows the findings themselves."""
    counts = dict(sorted(counts.items()))
    if fmt == "json":
        import json

        print(json.dumps({"rejected": str(path), "reason": why, "counts_by_code": counts}, indent=2))
        return
    print(f"{path}: REJECTED ({why}); `rosterd validate {path}` lists every finding")
    width = max(map(len, counts), default=0)
    for code, n in counts.items():
        print(f"  {code:<{width}}  {n:,}")


def _progress(message: str) -> None:
    print(f"\r\033[K{message}…", end="", file=sys.stderr, flush=True)


def _codes(args: argparse.Namespace) -> int:
    width = max(map(len, CODES))
    for code, meaning in CODES.items():
        print(f"{code:<{width}}  {meaning}")
    return 0


def _tenant_add(args: argparse.Namespace) -> int:
    from daemon.config import ConfigError, add_tenant, default_config_path

    path = args.config or default_config_path()
    if not path.is_file():
        print(f"rosterd tenant add: {path}: no such file (start from config/rosterd.example.toml)", file=sys.stderr)
        return EXIT_USAGE
    if not args.key and not args.password_stdin:
        print("rosterd tenant add: give --password-stdin, --key FILE or both", file=sys.stderr)
        return EXIT_USAGE
    keys = []
    for file in map(Path, args.key):
        try:
            keys += _public_keys(file)
        except (OSError, ValueError) as err:
            print(f"rosterd tenant add: {file}: {getattr(err, 'strerror', None) or err}", file=sys.stderr)
            return EXIT_USAGE
    password = None
    if args.password_stdin:
        password = _read_password(args.name)
        if not password:
            print("rosterd tenant add: no password was given (or the two entries differ)", file=sys.stderr)
            return EXIT_USAGE
    try:
        tenant = add_tenant(path, args.name, password=password, keys=keys, networks=args.network)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_REJECTED
    print(f"rosterd tenant add: added {tenant.name} to {path} ({', '.join(tenant.auth_kinds)})")
    if password is not None and path.stat().st_mode & 0o004:
        print(f"rosterd tenant add: note: everyone can read {path}, which now holds a password hash; "
              "restrict it to the user rosterd runs as (chmod o-r)", file=sys.stderr)  # fmt: skip
    return 0


def _public_keys(file: Path) -> list[str]:
    """The key lines of a .pub or authorized_keys file, each checked; ValueError names the bad line."""
    from daemon.config import check_public_key

    text = file.read_text(encoding="utf-8", errors="replace")
    if "PRIVATE KEY" in text:
        raise ValueError("this is a private key; give the public key (the .pub file), and keep this one secret")
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                keys.append(check_public_key(line))
            except ValueError as err:
                raise ValueError(f"line {number}: {err}") from None
    if not keys:
        raise ValueError("holds no public key")
    return keys


def _read_password(name: str) -> str:
    """One line from standard input, without its line end; on a terminal, asked twice without echo."""
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass(f"password for {name}: ")
        return first if getpass.getpass("again: ") == first else ""
    return sys.stdin.readline().removesuffix("\n").removesuffix("\r")


def _tenant_list(args: argparse.Namespace) -> int:
    from daemon.config import ConfigError, load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_REJECTED
    if not settings.tenants:
        print(f"rosterd tenant list: {settings.source} has no tenants", file=sys.stderr)
    width = max((len(t.name) for t in settings.tenants), default=0)
    for tenant in settings.tenants:
        networks = ", ".join(map(str, tenant.allowed_networks)) or "any network"
        print(f"{tenant.name:<{width}}  {', '.join(tenant.auth_kinds)}; from {networks}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        status = _run(argv)
        sys.stdout.flush()  # a reader gone early shows up here, not in the interpreter's own flush at exit
    except BrokenPipeError:  # `rosterd codes | head`: the reader has what it wanted; end without a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is still buffered goes nowhere
        return EXIT_BROKEN_PIPE
    return status


def _run(argv: list[str] | None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
