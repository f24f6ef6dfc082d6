"""`--config`, declared here once for every command that reads a config file."""

from __future__ import annotations

import argparse
from pathlib import Path

CONFIG_HELP = "the config file (default: config/rosterd.toml of the source tree)"


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """`--config PATH`, None when not given: `daemon.config.load_settings(None)` then reads the default file."""
    parser.add_argument("--config", type=Path, metavar="PATH", help=CONFIG_HELP)
