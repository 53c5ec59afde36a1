"""Shared fixtures: real scans from packages, cropped small.

Missing test data skips a test on a developer's machine with the reason shown, and fails it in CI
(CI=true), so the suite never passes there without having run on real scans.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from gmim.errors import InputError
from gmim.sample_data import itk_example_paths, mni152


@pytest.fixture(scope="session", autouse=True)
def shared_store_root(tmp_path_factory):
    """The session's runs prepare their volumes into a temporary folder of stores (their default,
    ``$XDG_CACHE_HOME/gmim/stores``), not the user's cache; runs on the same data share it."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME")
    else:
        os.environ["XDG_CACHE_HOME"] = previous


def made_once(tmp_path_factory, name: str, make: Callable[[Path], None]) -> Path:
    """The folder ``name``, filled by ``make(folder)`` once for the whole test run.

    Under pytest-xdist the workers share it: the first to need it makes it while holding a lock,
    the others wait and read it, so that an expensive run (a fine-tuning) is not repeated in every
    process. Alone, it is a folder of the session. Whoever uses it reads it and writes elsewhere.
    """
    from filelock import FileLock

    shared = os.environ.get("PYTEST_XDIST_WORKER") is not None
    root = tmp_path_factory.getbasetemp().parent if shared else tmp_path_factory.getbasetemp()  # pytest-N: this run's
    folder, done = root / name, root / f"{name}.done"
    with FileLock(root / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a failed attempt left
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"test data missing in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def itk_paths():
    """Paths of the ITK example T1 (128×128×62), its label map and its skull-strip mask."""
    try:
        return itk_example_paths()
    except InputError as error:
        _missing(str(error))


@pytest.fixture(scope="session")
def mni():
    """The ICBM152 template images (nibabel): t1, gm, wm, brain_mask."""
    try:
        return mni152()
    except InputError as error:
        _missing(str(error))


@pytest.fixture(scope="session")
def mni_t1(mni) -> np.ndarray:
    """The ICBM152 T1 as float32, 197×233×189."""
    return np.asarray(mni["t1"].get_fdata(), dtype=np.float32)


@pytest.fixture(scope="session")
def itk_t1(itk_paths) -> np.ndarray:
    """The ITK example T1 as float32, 128×128×62 (raw intensities)."""
    return np.asarray(nib.load(itk_paths["t1"]).get_fdata(), dtype=np.float32)


def cropped_image(path, start: tuple[int, int, int], size: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A crop of an image file as float32, with its affine moved to the crop's first voxel."""
    image = nib.load(path)
    affine = image.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ np.array(start)
    region = tuple(slice(s, s + n) for s, n in zip(start, size))
    return np.asarray(image.dataobj, dtype=np.float32)[region], affine


def crop(volume: np.ndarray, start: tuple[int, int, int], size: tuple[int, int, int]) -> torch.Tensor:
    """A (D, H, W) crop as a tensor, zero-padded where it runs past the volume."""
    out = np.zeros(size, dtype=np.float32)
    region = tuple(slice(s, min(s + n, v)) for s, n, v in zip(start, size, volume.shape))
    part = volume[region]
    out[tuple(slice(0, n) for n in part.shape)] = part
    return torch.from_numpy(out)


@pytest.fixture(scope="session")
def brain_extraction(tmp_path_factory, itk_paths, mni):
    """A brain-extraction task on real T1 MRIs: a datalist (``brain.json``) of four cases with brain masks.

    The ITK example T1 (2×2×3 mm, LSA on disk) with its skull-strip mask, a noisy copy stored with
    permuted axes, and the ICBM152 T1 at 2 mm with its brain mask, plain and with an intensity bias
    on a 10 % larger grid. Folds: the ITK T1 is fold 0, the others fold 1.
    """
    return made_once(tmp_path_factory, "brain", lambda root: _write_brain_extraction(root, itk_paths, mni))


def _write_brain_extraction(root: Path, itk_paths, mni) -> None:
    import json

    rng = np.random.default_rng(0)
    itk_t1 = nib.load(itk_paths["t1"])
    itk_mask = (np.asarray(nib.load(itk_paths["skull_strip"]).dataobj) > 0).astype(np.uint8)
    mni_t1 = np.asarray(mni["t1"].get_fdata(), dtype=np.float32)[::2, ::2, ::2]
    mni_mask = np.asarray(mni["brain_mask"].dataobj, dtype=np.uint8)[::2, ::2, ::2]
    mni_affine = mni["t1"].affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    permute = np.eye(4)[[2, 0, 1, 3]].T  # voxel (k, i, j) of the copy is voxel (i, j, k) of the original
    bias = np.linspace(0.8, 1.2, mni_t1.shape[0], dtype=np.float32)[:, None, None]
    images = {
        "itk_t1": (np.asarray(itk_t1.dataobj, dtype=np.float32), itk_mask, itk_t1.affine),
        "itk_noisy": (
            np.transpose(np.asarray(itk_t1.dataobj, dtype=np.float32) + rng.normal(0, 8, itk_t1.shape).astype(np.float32), (2, 0, 1)),
            np.transpose(itk_mask, (2, 0, 1)),
            itk_t1.affine @ permute,
        ),
        "mni": (mni_t1, mni_mask, mni_affine),
        "mni_bias": (mni_t1 * bias, mni_mask, mni_affine @ np.diag([1.1, 1.1, 1.1, 1.0])),
    }
    entries = []
    for name, (image, mask, affine) in images.items():
        nib.save(nib.Nifti1Image(image, affine), root / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), root / f"{name}_mask.nii.gz")
        entries.append({"image": f"{name}.nii.gz", "label": f"{name}_mask.nii.gz", "fold": 0 if name == "itk_t1" else 1})
    (root / "brain.json").write_text(json.dumps({"training": entries}))


#: The small runs of every test (one place: a test adds what it checks, and its own --steps).
#: Feature size 12 and the smallest crops Swin UNETR trains on: its decoders' instance norm needs at
#: least two bottleneck voxels, so 64×32×32 (pre-training) and 64×64×32 (fine-tuning), not 32³.
#: A step takes seconds on a CPU: keep steps few, and share a run between tests where one will do.
SMALL_PRETRAIN = [
    "--roi",
    "64",
    "32",
    "32",
    "--feature-size",
    "12",
    "--batch-size",
    "2",
    "--workers",
    "0",
    "--device",
    "cpu",
    "--set",
    "data.margin=[8,8,8]",
    "--set",
    "train.warmup_steps=1",
    "--set",
    "train.mixed_precision=false",
    "--set",
    "train.log_every=1",
]

#: A tiny Swin UNETR fine-tuning on the CPU: feature size 12, 64×64×32 crops of scans at 4 mm.
SMALL_FINETUNE = [
    "--roi",
    "64",
    "64",
    "32",
    "--feature-size",
    "12",
    "--device",
    "cpu",
    "--workers",
    "0",
    "--set",
    "preprocessing.spacing=[4, 4, 4]",
    "--set",
    "train.samples_per_volume=1",
]


@pytest.fixture(scope="session")
def gmim_encoder(tmp_path_factory):
    """A ``gmim`` encoder.pt: the state_dict of ``SwinUNETR(...).swinViT`` (feature size 12, 1 channel)."""
    from monai.networks.nets import SwinUNETR

    def make(folder: Path) -> None:
        torch.manual_seed(0)
        torch.save(SwinUNETR(in_channels=1, out_channels=2, feature_size=12).swinViT.state_dict(), folder / "encoder.pt")

    return made_once(tmp_path_factory, "encoder", make) / "encoder.pt"


@pytest.fixture(scope="session")
def finetuned_run(tmp_path_factory, brain_extraction, gmim_encoder):
    """A run folder of ``gmim finetune`` on the brain-extraction task from a gmim encoder: 3 steps,
    validated on fold 0 (the ITK T1). One run for all the processes of a test run (read it only)."""
    from gmim.cli import main

    def make(folder: Path) -> None:
        argv = ["finetune", str(brain_extraction / "brain.json"), "--out", str(folder / "from_encoder")]
        argv += ["--pretrained", str(gmim_encoder), "--steps", "3", "--fold", "0", *SMALL_FINETUNE]
        assert main(argv) == 0

    return made_once(tmp_path_factory, "finetuned", make) / "from_encoder"


@pytest.fixture
def compile_counters(monkeypatch):
    """``torch.compile`` through dynamo's eager backend, and dynamo's counters from zero.

    The graphs are captured as with inductor (graph breaks and recompiles show: dynamo makes them
    whatever the backend), but AOT autograd's tracing and inductor's code generation, minutes on a
    CPU, are left out; benchmarks/pretrain_step.py --compile times the real thing.
    """
    import functools

    import torch
    import torch._dynamo

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield torch._dynamo.utils.counters
    torch._dynamo.reset()


#: Fixtures that train a run, shared by the tests that use them: such tests are scheduled together.
SHARED_RUNS = ("finetuned_run", "pretrain_run", "smoke_subjects")


def pytest_collection_modifyitems(config, items):
    """Tests that need a fine-tuned run (a session fixture that trains one) are slow too.

    Slow tests run first. Under pytest-xdist each worker starts on a contiguous share of the list
    (``--dist worksteal``; idle workers then steal from the end of the others' shares), so the slow
    tests are dealt out in turn: every worker starts on its share of them, and what is left at the
    end of a run is quick tests, not one worker's minutes of training while the others wait. The
    tests of one shared run (:data:`SHARED_RUNS`) are dealt as one, so that one worker makes it and
    the others do not wait for it.
    """
    for item in items:
        if "finetuned_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    groups: dict[str, list] = {}
    for item in items:
        if item.get_closest_marker("slow"):
            shared = [name for name in SHARED_RUNS if name in getattr(item, "fixturenames", ())]
            groups.setdefault(shared[0] if shared else item.nodeid, []).append(item)
    units = list(groups.values()) + [[item] for item in items if not item.get_closest_marker("slow")]
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    items[:] = [item for worker in range(workers) for unit in units[worker::workers] for item in unit]
