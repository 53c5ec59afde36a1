"""Memory and start-up of ``gmim pretrain`` against the size of the collection.

A store of N clinical-size CTs (``ct_collection.py``, prepared by ``gmim prepare``) is trained from
for a few steps with the ``ct`` preset's data settings and a small network (64³ views by default, so
that the network's memory does not hide the data's), for several N. A
store of more volumes than were prepared is made of hard links to the prepared voxels, with entries
of their own (a thousand volumes without a thousand volumes of disk: the run cannot tell them
apart). Printed for each N: peak resident memory of the main process and of the largest loader
worker (sampled from /proc every 0.1 s), the time to read the store's entries, and the time from
the command's start to its first step.

    python benchmarks/collection_size.py --store /tmp/ct_store --sizes 10 100 1000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from gmim.data.store import Store


def linked_store(source: Store, count: int, folder: Path) -> Path:
    """A store of ``count`` entries whose voxels are hard links to ``source``'s, in turn."""
    entries = source.entries()
    (folder / "volumes").mkdir(parents=True, exist_ok=True)
    (folder / "store.json").write_text((source.folder / "store.json").read_text())
    for i in range(count):
        entry = entries[i % len(entries)].record()
        key = f"vol_{i:05d}-{entry['key'].split('-')[-1]}"
        os.link(source.array_path(entry["key"]), folder / "volumes" / f"{key}.b2nd")
        entry["sources"][0]["path"] = f"{entry['sources'][0]['path']}#{i:05d}"
        (folder / "volumes" / f"{key}.json").write_text(json.dumps({**entry, "key": key, "id": f"vol_{i:05d}"}))
    return folder


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def run(store: Path, out: Path, steps: int, workers: int, roi: int) -> dict[str, float]:
    command = [
        sys.executable,
        "-m",
        "gmim.cli",
        "pretrain",
        str(store),
        "--out",
        str(out),
        "--config",
        "ct",
        "--roi",
        str(roi),
        "--feature-size",
        "12",
        "--steps",
        str(steps),
        "--workers",
        str(workers),
        "--device",
        "cpu",
        "--set",
        "train.validate_every=0",
        "--set",
        "train.log_every=1",
        "--set",
        "train.mixed_precision=false",
        "--set",
        "train.picture_every=0",
    ]
    peaks = {"main": 0.0, "worker": 0.0}
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first_step: list[float] = []

    def watch() -> None:
        while process.poll() is None:
            peaks["main"] = max(peaks["main"], _rss_mb(process.pid))
            for child in _children(process.pid):
                peaks["worker"] = max(peaks["worker"], _rss_mb(child))
            if not first_step and (out / "metrics.jsonl").is_file() and '"train/loss"' in (out / "metrics.jsonl").read_text():
                first_step.append(time.perf_counter() - start)
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    _, err = process.communicate()
    watcher.join()
    if process.returncode != 0:
        raise SystemExit(err[-2000:])
    summary = json.loads((out / "summary.json").read_text())
    return {
        **peaks,
        "first_step_s": first_step[0] if first_step else float("nan"),
        "wall_s": time.perf_counter() - start,
        "data_share": summary["data_share"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True, help="a store of ct_collection.py volumes")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--roi", type=int, default=64, help="view size (64: the network's memory stays small beside the data's)")
    args = parser.parse_args()
    source = Store.open(args.store)
    print(
        f"{len(source.entries())} prepared volumes in {args.store}; runs of {args.steps} steps, {args.roi}³ views "
        f"(ct preset's 32-voxel margin), F 12, {args.workers} loader workers"
    )
    print("| volumes | entries read (s) | peak RSS main (MB) | peak RSS per worker (MB) | command start to first step (s) |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as scratch:
        for count in args.sizes:
            store = linked_store(source, count, Path(scratch) / f"store{count}")
            start = time.perf_counter()
            Store.open(store).entries()
            index_s = time.perf_counter() - start
            result = run(store, Path(scratch) / f"run{count}", args.steps, args.workers, args.roi)
            print(f"| {count} | {index_s:.2f} | {result['main']:.0f} | {result['worker']:.0f} | {result['first_step_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
