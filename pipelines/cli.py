"""The ``filmweaver`` command line. Each area registers its subcommands from its own ``cli`` module."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from curation.errors import FilmweaverError

# Modules with a ``register(subparsers)`` function; imported at start, so they import nothing heavy.
COMMAND_MODULES = [
    "pipelines.commands",
    "data_cards.cli",
    "training.cli",
    "inference.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="filmweaver", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except FilmweaverError as exc:
        print(f"filmweaver: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
