"""The ``gmim`` command line: one sub-command per module, bad input reported in one line (exit 2)."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from gmim import __version__

#: Modules that each define ``add_parser(subparsers)``; the parser's ``run`` default does the work.
COMMAND_MODULES = ("gmim.cli.demo", "gmim.cli.pretrain", "gmim.cli.finetune", "gmim.cli.predict", "gmim.cli.evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gmim",
        description="GMIM self-supervised pre-training of Swin UNETR encoders for 3D medical image segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"gmim {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def error_message(error: BaseException) -> str:
    """The error's message in one line. PyTorch re-raises an error of a DataLoader worker with the
    worker's traceback as its message; the original message is that traceback's last line."""
    text = str(error).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, OSError) as error:  # InputError is a ValueError
        print(f"gmim {args.command}: error: {error_message(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # a run that saved its state raises it with the signal's number
        print(f"gmim {args.command}: interrupted", file=sys.stderr)
        return 128 + getattr(interrupt, "signum", signal.SIGINT)
