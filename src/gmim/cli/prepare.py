"""``gmim prepare DATA... --out STORE``: preprocess a collection once into a store that runs train from."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from gmim.cli.arguments import (
    COLLECTION_FLAGS,
    add_collection_arguments,
    add_config_arguments,
    flag_overrides,
)
from gmim.config import load_config

EPILOG = """\
DATA: as for gmim pretrain (image folders, DICOM trees, datalists, nnU-Net or BraTS folders).
Each volume is read, reoriented and resampled (the preprocessing settings of --config and --set,
as gmim pretrain takes them) once, in a pool of --workers processes, and written as one compressed
blosc2 file with a JSON entry (docs/store.md). Run it again after adding volumes: only new or
changed ones are prepared; after a kill, only the volumes in flight are prepared again. Under
torchrun (one or several machines sharing the store's file system) each process prepares its
share and all wait for the whole. Then: gmim pretrain STORE --out RUN.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="preprocess a collection once into a store that pre-training reads crops from",
        description="Read, reorient, resample and check every volume of a collection once, into a store "
        "of compressed, chunked volumes that gmim pretrain reads a crop at a time.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data", nargs="+", type=Path, metavar="DATA", help="image folders, datalists or dataset folders")
    parser.add_argument("--out", type=Path, required=True, metavar="STORE", help="the store (a new folder, or one to add to)")
    add_config_arguments(parser, "pretrain")
    add_collection_arguments(parser)
    parser.add_argument("--workers", type=int, help="preparing processes (default: the usable cores)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gmim.data.sources import discover_cases
    from gmim.data.store import Store
    from gmim.errors import InputError
    from gmim.pretraining.config import PretrainConfig
    from gmim.resources import cores_per_process

    config = load_config(PretrainConfig, args.config, [*flag_overrides(args, COLLECTION_FLAGS), *args.overrides], presets="pretrain")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers}: must be at least 1")
    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    store = Store.create(args.out, config.preprocessing)
    cases = discover_cases(args.data, splits=("training", "validation"), scan_cache=store.scan_cache)
    workers = args.workers or cores_per_process()
    entries, skipped = store.prepare(cases, config.preprocessing, workers, bool(config.data.skip_bad), rank, world_size, show=rank == 0)
    if rank == 0:
        extra = f", {len(skipped)} skipped as bad" if skipped else ""
        print(f"store {args.out}: {len(entries)} volume(s) ready{extra}; train with: gmim pretrain {args.out} --out RUN")
    return 0
