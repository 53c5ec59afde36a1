"""The ``gmim`` command line: one sub-command per module, bad input reported in one line (exit 2).

``gmim --debug COMMAND`` (or ``GMIM_DEBUG=1``) lets every error through with its full traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence

from gmim import __version__
from gmim.errors import InputError

#: Modules that each define ``add_parser(subparsers)``; the parser's ``run`` default does the work.
COMMAND_MODULES = (
    "gmim.cli.demo",
    "gmim.cli.prepare",
    "gmim.cli.pretrain",
    "gmim.cli.finetune",
    "gmim.cli.predict",
    "gmim.cli.evaluate",
    "gmim.cli.export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gmim",
        description="GMIM self-supervised pre-training of Swin UNETR encoders for 3D medical image segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"gmim {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error (also GMIM_DEBUG=1)")
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


def out_of_memory(error: BaseException) -> str | None:
    """What to change, when ``error`` is PyTorch running out of GPU or CPU memory; else None."""
    text = str(error)
    if type(error).__name__ == "OutOfMemoryError" or "out of memory" in text or "can't allocate memory" in text:
        where = "the GPU" if "CUDA" in text or type(error).__name__ == "OutOfMemoryError" else "the CPU"
        return (
            f"out of memory on {where}: use a smaller --roi or --batch-size (training), a smaller "
            "--overlap (predict), set model.gradient_checkpointing=true, or run on another --device"
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug or os.environ.get("GMIM_DEBUG", "") not in ("", "0"):
        return int(args.run(args) or 0)
    try:
        return int(args.run(args) or 0)
    except (InputError, OSError) as error:  # the user's to fix; any other error is a bug: its traceback
        print(f"gmim {args.command}: error: {error_message(error)}", file=sys.stderr)
        return 2
    except RuntimeError as error:  # out-of-memory is the user's to fix too
        advice = out_of_memory(error)
        if advice is None:
            raise
        print(f"gmim {args.command}: error: {advice}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # a run that saved its state raises it with the signal's number
        print(f"gmim {args.command}: interrupted", file=sys.stderr)
        return 128 + getattr(interrupt, "signum", signal.SIGINT)
