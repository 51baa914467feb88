"""The ``filmweaver`` command line. Each area registers its subcommands from its own ``cli`` module."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import sys

from curation.errors import FilmweaverError

from .errors import report_error
from .ray_session import detach_stdin

# Modules with a ``register(subparsers)`` function; imported at start, so they import nothing heavy.
COMMAND_MODULES = [
    "pipelines.commands",
    "data_cards.cli",
    "training.cli",
    "inference.cli",
]

DESCRIPTION = """\
FilmWeaver: curate long videos into multi-shot scene datasets (shots, CLIP scenes, filters, LLM captions,
WebDataset shards), release them with a dataset card, and train and sample a cache-guided multi-shot video model.

Start with `filmweaver demo`, or `filmweaver curate VIDEO... --out DIR`; `filmweaver COMMAND --help` for each."""

EPILOG = """\
Mistakes in a command (a bad path, an invalid setting, a model not available offline) print one line and exit
with status 2; -v adds the traceback. Ctrl-C exits with status 130; curation resumes when rerun."""


def version() -> str:
    try:
        return importlib.metadata.version("filmweaver")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="filmweaver",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks of errors")
    parser.add_argument("--version", action="version", version=f"filmweaver {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    detach_stdin()  # nothing reads the terminal; children (ffmpeg, Ray workers) must not either
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        return report_error(exc, args.verbose, getattr(args, "on_interrupt", None))
    except FilmweaverError as exc:
        return report_error(exc, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
