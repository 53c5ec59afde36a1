"""DICOM discovery at archive size: files/s of ``find_series``, on one worker, on all, and from its scan cache.

Builds a tree of ``--series`` MR series of a real scan, the ITK example T1 brain MRI (128×128×62,
KmeansTest_T1UCharRaw.nii.gz from the Debian package insighttoolkit5-examples): written once as DICOM
by the tests' writer (benchmarks/dicom_series.py), then copied by a pool of processes with new UIDs and
PatientIDs, one patient folder per series (the default 323 series are 20,026 slices). With ``--tree``
the tree is kept there and reused (series already written are not written again). Then prints the
files/s of find_series: without a scan cache on 1 worker and on the default workers (the usable
cores), a first scan writing a cache, and a second scan reading it, each with the CPU time it took in
all processes: on a shared machine (see the load printed) a pool can only be as fast as the cores
left to it, and files per CPU-second tell its overhead apart. "Cold" means without a scan cache: the
files themselves are in the OS's page cache in every scan (just written or read).

    python benchmarks/dicom_scan.py [--series 323] [--tree DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from dicom_series import write_series  # beside this script
from gmim.data import dicom
from gmim.data.dicom import find_series
from gmim.resources import usable_cores

_template: list[pydicom.Dataset] = []


def _load_template(folder: Path) -> None:
    _template[:] = [pydicom.dcmread(path) for path in sorted(folder.iterdir())]


def _copy_series(folder: Path, patient: str) -> None:
    """The template series as another patient's: new study, series, frame of reference and instance UIDs.
    Written beside ``folder`` and renamed into place, so an interrupted run leaves no half series."""
    partial = folder.with_name(folder.name + ".partial")
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for ds in _template:
        ds.PatientID, ds.PatientName = patient, f"Bench^{patient}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = partial / "T1" / f"IM{ds.InstanceNumber:04d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
    partial.rename(folder)


def write_tree(root: Path, series: int) -> None:
    """``series`` patient folders P00000, P00001, … under ``root``, each one T1 series of 62 slices."""
    import nibabel as nib

    from gmim.sample_data import (
        itk_example_paths,  # imports torch: not at the top, which each scan worker imports
    )

    for partial in root.glob("*.partial"):
        shutil.rmtree(partial)
    missing = [n for n in range(series) if not (root / f"P{n:05d}").is_dir()]
    if not missing:
        return
    image = nib.load(itk_example_paths()["t1"])
    with tempfile.TemporaryDirectory() as template:
        write_series(np.asarray(image.dataobj, dtype=np.float32), image.affine, template, patient_id="TEMPLATE")
        start = time.perf_counter()
        with ProcessPoolExecutor(usable_cores(), initializer=_load_template, initargs=(Path(template),)) as pool:
            names = [f"P{n:05d}" for n in missing]
            list(pool.map(_copy_series, [root / name for name in names], names, chunksize=4))
    seconds = time.perf_counter() - start
    print(f"wrote {len(missing)} series ({len(missing) * image.shape[2]} files) in {seconds:.1f} s", flush=True)


def cpu_seconds() -> float:
    """CPU time of this process and of its ended children (a scan's pool workers once it shut down)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(label: str, root: Path, **options: Any) -> tuple[list, list[str]]:
    """find_series as a new process would run it (no index of an earlier call), timed."""
    dicom._index.cache_clear()
    cpu, start = cpu_seconds(), time.perf_counter()
    result = find_series(root, **options)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    files = sum(len(series.slices) for _, series in result[0])
    print(f"{label:<32} {seconds:7.2f} s {files / seconds:8.0f} files/s   CPU {cpu:6.2f} s {files / cpu:8.0f} files/CPU-s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=323, help="series of 62 slices (default 323: 20,026 files)")
    parser.add_argument("--tree", type=Path, help="where to keep the tree for later runs (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.tree or Path(scratch) / "tree"
        root.mkdir(parents=True, exist_ok=True)
        write_tree(root, args.series)
        cache = Path(scratch) / "scan-cache.json"
        load = ", ".join(f"{n:.1f}" for n in os.getloadavg())
        print(f"tree {root}; default workers: {usable_cores()} (the usable cores); load average {load}", flush=True)
        serial = timed("cold scan, 1 worker", root, workers=1)
        assert not serial[1], serial[1]
        print(f"{len(serial[0])} series found")
        assert timed("cold scan, default workers", root) == serial
        assert timed("cold scan writing the cache", root, cache=cache) == serial
        assert timed("second scan, from the cache", root, cache=cache) == serial
        print(f"cache: {cache.stat().st_size / 2**20:.1f} MiB of JSON")


if __name__ == "__main__":
    main()
