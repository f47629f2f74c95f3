"""The ``precomputed`` command (also ``python -m xarray_precomputed``).

One module per command: ``info``, ``copy``, ``downsample``, ``link``, ``serve``,
``demo``. Exit status: 0 done, 1 the operation failed (the error is printed as
one line; ``--debug`` prints the traceback), 2 bad command line, 130 interrupted.

>>> # main(["info", "gs://bucket/em", "--json"])
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from . import copy, demo, downsample, info, link, serve

COMMANDS = (info, copy, downsample, link, serve, demo)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _common(suppress: bool) -> argparse.ArgumentParser:
    """``--quiet`` and ``--debug``, accepted before and after the command name."""
    default = argparse.SUPPRESS if suppress else False
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-q", "--quiet", action="store_true", default=default,
                   help="no progress bars or summaries, only errors and requested output")  # fmt: skip
    p.add_argument("--debug", action="store_true", default=default,
                   help="print the full traceback of an error")  # fmt: skip
    return p


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="precomputed",
        parents=[_common(False)],
        description="Inspect, copy, downsample, serve and view Neuroglancer precomputed volumes.",
        epilog="Exit status: 0 done, 1 failed, 2 bad command line, 130 interrupted. "
        "Run 'precomputed COMMAND -h' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub, [_common(True)])
    return parser


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or repr(error)
    return f"{type(error).__name__}: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug:
        logging.basicConfig(level=logging.DEBUG)
    prefix = f"precomputed {args.command}: error:"
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"precomputed {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return EXIT_FAILED
    except argparse.ArgumentTypeError as e:
        print(f"{prefix} {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        print(f"{prefix} {_one_line(e)}", file=sys.stderr)
        return EXIT_FAILED


__all__ = ["main"]
