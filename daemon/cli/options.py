"""`--config`, declared here once for every command that reads a config file."""

from __future__ import annotations

import argparse
from pathlib import Path

CONFIG_HELP = "the config file (default: config/rosterd.toml of the source tree)"


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """`--config PATH`, None when not given: `daemon.config.load_settings(None)` then reads the default file."""
    parser.add_argument("--config", type=Path, metavar="PATH", help=CONFIG_HELP)


def action_parsers(sub: argparse._SubParsersAction, name: str, help: str, description: str
                   ) -> argparse._SubParsersAction:  # fmt: skip
    """A command `name` made of ACTIONs (`rosterd api-client add`, ...): the parsers to add each ACTION to."""
    command = sub.add_parser(name, help=help, description=description)
    actions = command.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    return actions


def action_parser(actions: argparse._SubParsersAction, name: str, func, help: str, description: str
                  ) -> argparse.ArgumentParser:  # fmt: skip
    """One ACTION of such a command, with --config, run by `func`; the caller adds its arguments."""
    parser = actions.add_parser(name, help=help, description=description)
    add_config_option(parser)
    parser.set_defaults(func=func)
    return parser
