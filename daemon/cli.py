"""The `rosterd` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .oneroster.codes import CODES

EXIT_ACCEPTED, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rosterd",
        description="rosterd takes OneRoster CSV zips from school information systems over SFTP, validates "
        "them, keeps snapshots and delivers the changes to CERS and licence targets.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

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

    codes = sub.add_parser("codes", help="list every finding code and what it means",
                           description="List every finding code rosterd can report, with its meaning.")  # fmt: skip
    codes.set_defaults(func=_codes)
    return parser


def _validate(args: argparse.Namespace) -> int:
    from .oneroster.findings import Mode
    from .oneroster.report import render_json, render_text
    from .oneroster.validate import ValidateOptions, validate_package
    from .oneroster.zipread import ZipLimits

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


def _progress(message: str) -> None:
    print(f"\r\033[K{message}…", end="", file=sys.stderr, flush=True)


def _codes(args: argparse.Namespace) -> int:
    width = max(map(len, CODES))
    for code, meaning in CODES.items():
        print(f"{code:<{width}}  {meaning}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
