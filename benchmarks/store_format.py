"""Which on-disk format the prepared store uses: size and crop-read time of one clinical-size CT.

One volume of ``ct_collection.py`` (512×512×200 int16 HU) is written as blosc2 NDArrays (the
format of nnU-Net v2 and nnssl) and as zarr v3 arrays with the same codec, at a few chunk sizes, and
read back as the random 160³ regions that two 128³ views with a 32-voxel margin cover. Printed:
file size, write time, mean region-read time, whole-volume read time, and the .nii.gz read for
comparison.

    python benchmarks/store_format.py --volume /tmp/ct/ct_0000.nii.gz
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REGION = (160, 160, 160)
READS = 20


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size


def _regions(shape: tuple[int, ...], seed: int = 0) -> list[tuple[slice, ...]]:
    rng = np.random.default_rng(seed)
    return [
        tuple(slice(s, s + r) for s, r in zip((rng.integers(0, n - r + 1) for n, r in zip(shape, REGION)), REGION)) for _ in range(READS)
    ]


def _time(read, regions) -> tuple[float, float]:
    start = time.perf_counter()
    for region in regions:
        read(region)
    per_region = (time.perf_counter() - start) / len(regions)
    start = time.perf_counter()
    read(tuple(slice(None) for _ in regions[0]))
    return per_region, time.perf_counter() - start


def blosc2_case(volume: np.ndarray, folder: Path, chunks: tuple[int, ...], blocks: tuple[int, ...]) -> dict[str, float]:
    import blosc2

    path = folder / f"b2_{chunks[0]}_{blocks[0]}.b2nd"
    start = time.perf_counter()
    blosc2.asarray(
        volume,
        urlpath=str(path),
        mode="w",
        chunks=chunks,
        blocks=blocks,
        cparams={"codec": blosc2.Codec.ZSTD, "clevel": 3, "filters": [blosc2.Filter.SHUFFLE]},
    )
    written = time.perf_counter() - start
    array = blosc2.open(str(path), mode="r", mmap_mode="r")
    region, whole = _time(lambda s: array[s], _regions(volume.shape))
    return {"size_mb": _size(path) / 1e6, "write_s": written, "region_ms": region * 1e3, "whole_s": whole}


def zarr_case(volume: np.ndarray, folder: Path, chunks: tuple[int, ...]) -> dict[str, float]:
    import zarr
    from zarr.codecs import BloscCodec

    path = folder / f"zarr_{chunks[0]}"
    start = time.perf_counter()
    array = zarr.create_array(
        store=str(path),
        shape=volume.shape,
        chunks=chunks,
        dtype=volume.dtype,
        compressors=BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
        overwrite=True,
    )
    array[...] = volume
    written = time.perf_counter() - start
    array = zarr.open_array(str(path), mode="r")
    region, whole = _time(lambda s: array[s], _regions(volume.shape))
    return {"size_mb": _size(path) / 1e6, "write_s": written, "region_ms": region * 1e3, "whole_s": whole}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volume", type=Path, required=True, help="a .nii.gz of ct_collection.py")
    args = parser.parse_args()
    start = time.perf_counter()
    volume = np.asarray(nib.load(args.volume).dataobj, dtype=np.int16)
    nifti_s = time.perf_counter() - start
    print(
        f"volume {volume.shape} int16, {volume.nbytes / 1e6:.0f} MB raw; .nii.gz {args.volume.stat().st_size / 1e6:.1f} MB, "
        f"read whole {nifti_s:.2f} s (any crop of it costs the same)"
    )
    folder = Path(tempfile.mkdtemp())
    try:
        rows = {}
        for chunks, blocks in (((64,) * 3, (16,) * 3), ((64,) * 3, (32,) * 3), ((128,) * 3, (32,) * 3)):
            rows[f"blosc2 chunks {chunks[0]}³ blocks {blocks[0]}³"] = blosc2_case(volume, folder, chunks, blocks)
        for chunks in ((64,) * 3, (128,) * 3):
            rows[f"zarr v3 chunks {chunks[0]}³"] = zarr_case(volume, folder, chunks)
        print("| format | size (MB) | write (s) | 160³ region read (ms) | whole read (s) |\n| --- | --- | --- | --- | --- |")
        for name, row in rows.items():
            print(f"| {name} | {row['size_mb']:.1f} | {row['write_s']:.2f} | {row['region_ms']:.1f} | {row['whole_s']:.2f} |")
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
