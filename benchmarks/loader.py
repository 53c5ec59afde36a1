"""Does the loader feed a GPU? Samples per second per worker, and the loop's wait for data.

A pre-training sample at the ``ct`` preset (two 128³ views from a 160³ region and the target view's
intensity augmentation), on clinical-size CT (``ct_collection.py``), made four ways:

- ``raw``: the ``.nii.gz`` read and preprocessed whole for each sample (no cache);
- ``old disk cache``: the preprocessed float32 volume from MONAI's PersistentDataset (the cache
  before the store);
- ``old memory cache``: the preprocessed volume held in memory (the old default, whose memory grew
  with the collection);
- ``store``: a region read from the prepared store, normalised on the crop (now the only path).

Each is timed in one process with one thread (a worker's share of the machine). Then the run's real
loader (``gmim.engine.sampling.run_loader``) over the store, with N workers, against a simulated
training step of ``--step-ms`` (150 ms: an H100's GMIM step at 128³): the share of the loop's time
spent waiting for data, as ``summary.json`` reports it. From the per-worker rate, the workers a
step needs, and the wait to expect with 8.

    python benchmarks/loader.py --data /tmp/ct --workers 1 2
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from monai.data import PersistentDataset
from monai.transforms import Compose, CropForegroundd

from gmim.config import load_config
from gmim.data.sources import discover_cases
from gmim.data.store import Store
from gmim.data.transforms import load_transforms
from gmim.engine.sampling import SeededDataset, StepSampler, run_loader
from gmim.pretraining.config import PretrainConfig
from gmim.pretraining.data import view_transforms, volume_records
from gmim.pretraining.views import SiameseViewsd, target_augmentation


def _in_memory_views(config: PretrainConfig) -> Compose:
    """The views of a whole preprocessed volume, as the loader made them before the store."""
    from monai.transforms import EnsureTyped, RandFlipd

    return Compose(
        [
            *(RandFlipd("image", prob=0.5, spatial_axis=a) for a in range(3)),
            SiameseViewsd(config.model.roi, config.data.margin),
            target_augmentation("y"),
            EnsureTyped(["x", "y"], dtype=torch.float32, track_meta=False),
        ]
    )


def _per_sample(dataset: SeededDataset, samples: int) -> float:
    dataset[0, 0]  # warm-up: imports, first file opened
    times = []
    for i in range(samples):
        start = time.perf_counter()
        dataset[1, i % len(dataset)]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def waiting_share(dataset: SeededDataset, workers: int, step_s: float, steps: int, batch: int) -> float:
    """The share of a loop's time spent in ``next(batches)``, with a step of ``step_s`` seconds."""
    loader = run_loader(dataset, StepSampler(len(dataset), batch, 0, steps + 4), workers, pin_memory=False)
    batches = iter(loader)
    for _ in range(4):  # the workers start and fill their queue, as in the first steps of a run
        next(batches)
    waited, start = 0.0, time.perf_counter()
    for _ in range(steps):
        before = time.perf_counter()
        next(batches)
        waited += time.perf_counter() - before
        time.sleep(step_s)
    return waited / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a folder of ct_collection.py volumes")
    parser.add_argument("--store", type=Path, help="a store of them (default: prepared into a temporary folder)")
    parser.add_argument("--samples", type=int, default=8, help="samples timed per way")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--step-ms", type=float, default=150.0)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(PretrainConfig, "ct", [], presets="pretrain")
    cases = discover_cases([args.data])
    scratch = Path(tempfile.mkdtemp())
    store = Store.create(args.store or scratch / "store", config.preprocessing)
    prepared, _ = store.prepare(cases, config.preprocessing)
    records = volume_records([(e, store.array_path(e.key)) for e in prepared], config)
    load = [
        *load_transforms(config.preprocessing, label=False),
        CropForegroundd("image", source_key="image", select_fn=lambda x: x != 0, allow_smaller=True),
    ]
    raw_records = [{"image": [str(p) for p in c.images]} for c in cases]
    disk_cache = PersistentDataset(raw_records, Compose(load), cache_dir=scratch / "cache")
    for i in range(len(disk_cache)):
        disk_cache[i]  # written before it is timed
    ways = {
        "raw .nii.gz": SeededDataset(raw_records, Compose([*load, _in_memory_views(config)])),
        "old disk cache": SeededDataset(disk_cache, _in_memory_views(config)),
        "old memory cache": SeededDataset([Compose(load)(r) for r in raw_records[:2]], _in_memory_views(config)),
        "store": SeededDataset(records, view_transforms(config)),
    }
    print(f"{len(cases)} volumes of {prepared[0].shape[1:]} voxels; samples of two {config.model.roi} views; one thread")
    print("| source | s per sample | samples/s per worker |\n| --- | --- | --- |")
    rates = {}
    for name, dataset in ways.items():
        seconds = _per_sample(dataset, args.samples)
        rates[name] = 1 / seconds
        print(f"| {name} | {seconds:.3f} | {1 / seconds:.2f} |", flush=True)
    step_s = args.step_ms / 1000
    needed = args.batch / step_s
    print(f"\na {args.step_ms:.0f} ms step of batch {args.batch} takes {needed:.1f} samples/s")
    for name, rate in rates.items():
        expected = max(0.0, 1 - 8 * rate / needed)
        print(f"  {name}: {needed / rate:.1f} workers needed; 8 workers: waiting about {expected:.0%}")
    print(f"\n| loader workers | waiting for data (store, {args.step_ms:.0f} ms step) |\n| --- | --- |")
    for workers in args.workers:
        share = waiting_share(ways["store"], workers, step_s, args.steps, args.batch)
        print(f"| {workers} | {share:.1%} |", flush=True)
    shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
