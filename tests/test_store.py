"""The prepared store: crop reads equal the preprocessed volume, and preparation is resumable,
incremental and refuses a store of other settings (sharded preparation: the two-process test of
test_pretrain.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, CropForegroundd

from gmim.cli import main
from gmim.data.sources import discover_cases
from gmim.data.store import Store, read_region
from gmim.data.transforms import Preprocessing, load_transforms
from gmim.engine.config import LoopConfig
from gmim.pretraining.views import StoredRegiond
from gmim.resources import usable_cores


def save(path: Path, array: np.ndarray, spacing: float = 1.0, dtype: type = np.float32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array.astype(dtype), np.diag([spacing, spacing, spacing, 1.0]))
    image.header.set_data_dtype(dtype)
    nib.save(image, path)
    return path


def ct_like(t1: np.ndarray) -> np.ndarray:
    """A T1 crop as int16 Hounsfield-like units: air -1000, tissue 0 to 100."""
    scale = float(np.percentile(t1[t1 > 0], 99))
    return np.where(t1 > 0.05 * scale, np.clip(t1 / scale, 0, 1.5) * 100, -1000).astype(np.int16)


def run_cli(*args: object) -> int:
    return main([str(a) for a in args])


def entries(store: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((store / "volumes").glob("*.json"))]


@pytest.mark.parametrize("modality", ["mri", "ct"])
def test_regions_read_from_the_store_are_the_preprocessed_volume(tmp_path, mni_t1, modality):
    """A region read from the store and normalised equals that region of the volume preprocessed
    whole in memory (resampled, normalised, cropped to its foreground), up to the stored type."""
    crop = mni_t1[30:160, 40:180, 20:150]
    path = save(tmp_path / "scan.nii.gz", ct_like(crop) if modality == "ct" else crop, dtype=np.int16 if modality == "ct" else np.float32)
    preprocessing = Preprocessing(modality=modality, window=(-1000.0, 1000.0), spacing=(1.5, 1.5, 1.5))
    whole = Compose(
        [
            *load_transforms(preprocessing, label=False),
            CropForegroundd("image", source_key="image", select_fn=lambda x: x != 0, allow_smaller=True),
        ]
    )
    expected = torch.as_tensor(whole({"image": [str(path)]})["image"]).numpy()
    store = Store.create(tmp_path / "store", preprocessing)
    (entry,), _ = store.prepare(discover_cases([path]), preprocessing, workers=1, show=False)
    assert entry.dtype == ("int16" if modality == "ct" else "float16")
    assert tuple(b - a for a, b in entry.foreground) == expected.shape[1:]
    record = {"path": str(store.array_path(entry.key)), "extent": entry.foreground, "mean": entry.mean, "std": entry.std}
    tolerance = 3e-4 if modality == "ct" else 5e-3  # int16 HU rounding over a 2000 HU window; float16
    for size in ((32, 48, 40), tuple(n + 10 for n in expected.shape[1:])):  # inside the volume; larger: padded
        regions = StoredRegiond(size, preprocessing)
        for seed in range(3):
            regions.set_random_state(seed=seed)
            starts = regions.randomize(entry.foreground)
            regions.set_random_state(seed=seed)
            image = regions(dict(record))["image"].numpy()
            padded = np.pad(
                expected, [(0, 0)] + [((max(n - e, 0)) // 2, max(n - e, 0) - max(n - e, 0) // 2) for n, e in zip(size, expected.shape[1:])]
            )
            want = padded[(slice(None), *(slice(s, s + n) for s, n in zip(starts, size)))]
            assert image.shape == (1, *size)
            np.testing.assert_allclose(image, want, atol=tolerance)
    voxels = read_region(store.array_path(entry.key), [slice(0, n) for n in entry.shape[1:]])
    assert voxels.shape == tuple(entry.shape)


def test_an_empty_scan_is_named_and_recorded(tmp_path):
    save(tmp_path / "data" / "empty.nii.gz", np.zeros((20, 20, 20)))
    save(tmp_path / "data" / "brain.nii.gz", np.ones((20, 20, 20)))
    assert run_cli("prepare", tmp_path / "data", "--out", tmp_path / "store", "--modality", "mri") == 2
    assert run_cli("prepare", tmp_path / "data", "--out", tmp_path / "store", "--modality", "mri", "--skip-bad") == 0
    errors = [e["error"] for e in entries(tmp_path / "store") if "error" in e]
    assert len(errors) == 1 and "empty.nii.gz: every voxel is 0: an empty scan" in errors[0]
    assert len(Store.open(tmp_path / "store").entries()) == 1


def test_preparation_is_incremental_and_notices_changed_sources(tmp_path, itk_t1, capsys):
    data, store = tmp_path / "data", tmp_path / "store"
    for name, start in (("a", 10), ("b", 20)):
        save(data / f"{name}.nii.gz", itk_t1[start : start + 60, start : start + 60, 5:45])

    def prepare(*extra: str) -> str:
        code = run_cli("prepare", data, "--out", store, "--modality", "mri", "--workers", "1", *extra)
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    assert "2 volume(s), 0 prepared already, 2 to prepare" in prepare()
    save(data / "c.nii.gz", itk_t1[30:90, 30:90, 5:45])  # added
    assert "3 volume(s), 2 prepared already, 1 to prepare" in prepare()
    before = {e["id"]: e for e in entries(store)}
    save(data / "a.nii.gz", itk_t1[0:50, 0:50, 0:40])  # changed: other size and time
    assert "3 volume(s), 2 prepared already, 1 to prepare" in prepare()
    after = {e["id"]: e for e in entries(store)}
    assert after["a"]["shape"] != before["a"]["shape"] and after["b"] == before["b"]
    assert not list((store / "volumes").glob(".*tmp*"))
    # other preprocessing never mixes into this store
    assert run_cli("prepare", data, "--out", store, "--modality", "mri", "--set", "preprocessing.spacing=[2,2,2]") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{store}: a store prepared with" in err and "spacing None" in err, err
    assert run_cli("pretrain", store, "--out", tmp_path / "run", "--config", "ct") == 2  # nor trains with other settings
    assert "prepared with modality mri" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_preparation_resumes(tmp_path, mni_t1, capsys):
    """A kill loses only the volumes in flight; the next run prepares the rest. Six whole ICBM152
    volumes resampled to 1.25 mm, one at a time: about a second each, so that the kill, as soon as
    the first is done, finds several still to prepare."""
    data, store = tmp_path / "data", tmp_path / "store"
    volumes = 6
    for i in range(volumes):
        save(data / f"brain{i}.nii.gz", np.roll(mni_t1, 3 * i, axis=0))
    arguments = ["prepare", str(data), "--out", str(store), "--modality", "mri", "--workers", "1"]
    arguments += ["--set", "preprocessing.spacing=[1.25,1.25,1.25]"]
    process = subprocess.Popen(
        [sys.executable, "-m", "gmim.cli", *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while not list((store / "volumes").glob("*.json")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the command and its preparing processes
    process.wait()
    done = entries(store)
    assert 1 <= len(done) < volumes, "the kill came too late to test anything"
    assert all(Store(store, {}).array_path(e["key"]).is_file() for e in done)  # each entry's voxels are whole
    assert run_cli(*arguments) == 0  # the next run: in this process, one interpreter fewer to start
    assert f"{volumes} volume(s), {len(done)} prepared already, {volumes - len(done)} to prepare" in capsys.readouterr().out
    assert len(Store.open(store).entries()) == volumes


def test_loader_workers_default_to_the_cores_of_each_process(monkeypatch):
    assert LoopConfig(steps=1, workers=3).loader_workers() == 3
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert 1 <= LoopConfig(steps=1).loader_workers() == min(8, usable_cores())
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
    assert LoopConfig(steps=1).loader_workers() == 1
