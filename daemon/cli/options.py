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
