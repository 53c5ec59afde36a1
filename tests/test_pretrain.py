"""GMIM pre-training end to end on real scans: the CLI, outputs, exact resume, torchrun, inputs."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.networks.nets import SwinUNETR

from conftest import SMALL_PRETRAIN
from gmim.cli import main
from gmim.config import load_config, preset_names
from gmim.data.sources import discover_cases
from gmim.data.store import Store
from gmim.engine.device import seed_everything
from gmim.pretraining.config import AS_RUN, PretrainConfig
from gmim.pretraining.data import view_transforms, volume_records
from gmim.pretraining.health import COLLAPSE_FRACTION
from gmim.pretraining.method import build_model
from monai14 import assert_hidden_states, monai14_state
from swin_layouts import monai_self_supervised


def save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.diag([1.5, 1.5, 1.5, 1.0]) if affine is None else affine), path)
    return path


@pytest.fixture(scope="module")
def brains(tmp_path_factory, mni_t1, itk_t1) -> Path:
    """A folder of four small real brain volumes: ICBM152 T1 crops and ITK example T1 crops."""
    folder = tmp_path_factory.mktemp("brains")
    save(folder / "icbm_a.nii.gz", mni_t1[40:150:2, 50:170:2, 30:140:2])
    save(folder / "icbm_b.nii.gz", mni_t1[50:160:2, 40:160:2, 50:160:2])
    save(folder / "sub" / "itk_a.nii.gz", itk_t1[10:110, 10:110, 5:55])
    save(folder / "sub" / "itk_b.nii.gz", itk_t1[20:120, 15:115, 10:60])
    return folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


def collapse_run(brains, out, capsys, *extra: str) -> dict:
    """6 steps at lr 4e-3 on 64×32×32 crops (two final-stage tokens), validated at steps 0, 3 and 6:
    the health in summary.json, with what the run printed under "printed"."""
    options = ["--config", "cpu-small", "--steps", "6", *SMALL_PRETRAIN, "--lr", "4e-3", "--set", "train.validate_every=3"]
    options += ["--set", "train.picture_every=0", "--set", "train.checkpoint_every=0"]
    assert run_cli("pretrain", brains, "--out", out, *options, *extra) == 0
    health = json.loads((out / "summary.json").read_text())["health"]
    return health | {"printed": capsys.readouterr().out}


@pytest.mark.slow
def test_the_method_as_specified_collapses_and_the_run_warns_once(brains, tmp_path, capsys):
    """Without the variance term (the method as specified), the final-stage tokens become one vector
    within a few steps (at step 3 already, so steps 3 and 6 both find it), and the run says so once."""
    collapsed = collapse_run(brains, tmp_path / "as_specified", capsys, "--set", "loss.variance_weight=0")
    assert collapsed["collapsed"] and collapsed["final_stage_relative"] < COLLAPSE_FRACTION
    warnings = [line for line in collapsed["printed"].splitlines() if line.startswith("warning: the encoder is collapsing")]
    assert len(warnings) == 1 and "loss.variance_weight" in warnings[0]  # once, saying what to try
    assert "representation health (COLLAPSED)" in collapsed["printed"]


@pytest.mark.slow
def test_the_cpu_preset_does_not_collapse(brains, tmp_path, capsys):
    """The same run with the cpu-small preset's variance term: the tokens stay apart."""
    healthy = collapse_run(brains, tmp_path / "preset", capsys)
    assert not healthy["collapsed"] and healthy["final_stage_relative"] > COLLAPSE_FRACTION
    assert "collapsing" not in healthy["printed"] and "representation health: final-stage variation" in healthy["printed"]


@pytest.mark.slow
def test_three_step_run_through_the_cli(brains, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        run_cli(
            "pretrain",
            brains,
            "--out",
            out,
            "--config",
            "cpu-small",
            "--steps",
            "3",
            *SMALL_PRETRAIN,
            "--set",
            "train.picture_every=3",
            "--set",
            "data.validation_volumes=1",
            "--set",
            "train.validate_every=3",
        )
        == 0
    )
    assert {"config.yaml", "encoder.pt", "last.pt", "metrics.jsonl", "loss_curve.png", "pictures", "tensorboard"} <= {
        p.name for p in out.iterdir()
    }
    weights = torch.load(out / "encoder.pt", weights_only=True)
    swin = SwinUNETR(in_channels=1, out_channels=2, feature_size=12).swinViT
    swin.load_state_dict(weights, strict=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3]
    assert any("val/loss" in r for r in records)
    assert all(np.isfinite(r["train/loss"]) for r in records if "train/loss" in r)
    assert (out / "pictures" / "step000003.png").stat().st_size > 0
    config = load_config(PretrainConfig, out / "config.yaml")
    assert config.model.in_channels == 1 and config.model.roi == (64, 32, 32) and config.train.steps == 3
    assert str(out / "encoder.pt") in capsys.readouterr().out
    # the run folder is not overwritten by accident
    assert run_cli("pretrain", brains, "--out", out, "--steps", "3", *SMALL_PRETRAIN) == 2
    assert "holds a run already" in capsys.readouterr().err


@pytest.mark.slow
def test_interrupt_then_resume_continues_exactly(brains, tmp_path):
    """Ctrl-C during a 3-step run writes a checkpoint; resuming it gives the weights of 3 steps straight.
    The straight run reads the image files (prepared into the shared store first), the interrupted
    one a store of them that ``gmim prepare`` made: the same volumes, samples and weights."""
    options = ["--config", "cpu-small", *SMALL_PRETRAIN, "--steps", "3"]
    assert run_cli("pretrain", brains, *options, "--out", tmp_path / "straight") == 0
    assert run_cli("prepare", brains, "--config", "cpu-small", "--out", tmp_path / "store") == 0
    common = ["pretrain", str(tmp_path / "store"), *options]
    split = tmp_path / "split"
    process = subprocess.Popen(
        [sys.executable, "-m", "gmim.cli", *common, "--out", str(split)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not ((split / "metrics.jsonl").is_file() and (split / "metrics.jsonl").read_text().strip()):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-2000:]
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    stopped = torch.load(split / "last.pt", weights_only=True)["step"]
    assert 1 <= stopped < 3  # Ctrl-C came after the validation at step 0, in the first steps
    orphan = split / ".last.pt.k1ll3d.tmp.pt"  # what a kill during a checkpoint write leaves
    orphan.write_bytes(b"half a checkpoint")
    assert run_cli(*common, "--out", split, "--resume") == 0
    assert not orphan.exists()
    run = json.loads((split / "run.json").read_text())  # how the run was started, and each resume
    assert run["command"].startswith(f"gmim pretrain {tmp_path / 'store'}") and len(run["resumed"]) == 1 and run["gmim"]
    assert (split / "last.pt").stat().st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's 0600
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    resumed = torch.load(split / "last.pt", weights_only=True)
    assert straight["step"] == resumed["step"] == 3
    for key, value in straight["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, msg=key)
    records = [json.loads(line) for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3]
    assert [r["step"] for r in records if "val/health/variation4" in r] == [0, 3]  # the baseline kept through the resume
    summary = json.loads((split / "summary.json").read_text())
    assert summary["health"]["initial"]["variation"] == [records[0][f"val/health/variation{i}"] for i in range(5)]


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(brains, tmp_path):
    common = ["pretrain", str(brains), "--config", "cpu-small", *SMALL_PRETRAIN, "--steps", "2"]
    # one thread in every process: two threads alone move the weights by ~2 % after Adam (below)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the one process is this one
        assert run_cli(*common, "--out", tmp_path / "one") == 0
    finally:
        torch.set_num_threads(threads)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "gmim.cli"]
    # into a store of its own: the two processes prepare the volumes at even and odd places, then each
    # waits for the other's (forever, were one share never prepared)
    result = subprocess.run(
        [*torchrun, *common, "--out", str(tmp_path / "two"), "--store", str(tmp_path / "stores")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"4 volume\(s\), [0-2] prepared already, [2-4] to prepare, 2 by this process of 2", result.stdout), result.stdout
    assert len(list((tmp_path / "stores").glob("*/volumes/*.b2nd"))) == 4
    records = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in ("one", "two")]
    losses = [[r["train/loss"] for r in run if "train/loss" in r] for run in records]
    health = [[r["val/health/variation4"] for r in run if "val/health/variation4" in r] for run in records]
    np.testing.assert_allclose(health[1], health[0], rtol=1e-4)  # rank 0 measures the same views
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    # Adam turns float round-off in near-zero gradients into visible steps, so compare the whole
    # update of the weights: it must agree to well under 1 %.
    config = load_config(PretrainConfig, tmp_path / "one" / "config.yaml")
    seed_everything(config.train.seed)
    initial = build_model(config).encoder.state_dict()
    one, two = (torch.load(tmp_path / run / "encoder.pt", weights_only=True) for run in ("one", "two"))
    update_one = torch.cat([(one[k] - initial[k]).flatten() for k in initial])
    update_two = torch.cat([(two[k] - initial[k]).flatten() for k in initial])
    assert float((update_one - update_two).norm() / update_one.norm()) < 0.01


def stored_records(cases, config, folder):
    """The loader's records of ``cases``, prepared into a store at ``folder``."""
    store = Store.create(folder, config.preprocessing)
    entries, skipped = store.prepare(cases, config.preprocessing, workers=1, show=False)
    assert not skipped
    return volume_records([(e, store.array_path(e.key)) for e in entries], config)


def test_each_input_format_gives_views(tmp_path, mni_t1, itk_t1):
    """Image folder, MSD datalist, nnU-Net raw folder and BraTS-style case folders, through the data pipeline."""
    a, b = mni_t1[60:124:2, 60:124:2, 50:114:2], itk_t1[30:94, 30:94, 10:42]
    save(tmp_path / "folder" / "a.nii.gz", a)
    save(tmp_path / "folder" / "b.nii.gz", b)
    save(tmp_path / "msd" / "imagesTr" / "a.nii.gz", a)
    save(tmp_path / "msd" / "imagesTr" / "b.nii.gz", b)
    (tmp_path / "msd" / "dataset.json").write_text(
        json.dumps({"training": [{"image": "imagesTr/a.nii.gz"}], "validation": [{"image": "imagesTr/b.nii.gz"}]})
    )
    for case, volume in (("case_a", a), ("case_b", b)):
        for channel in range(2):
            save(tmp_path / "nnunet" / "imagesTr" / f"{case}_{channel:04d}.nii.gz", volume + channel)
        for modality in ("flair", "t1", "t1ce", "t2"):
            save(tmp_path / "brats" / case / f"{case}_{modality}.nii.gz", volume)
    (tmp_path / "nnunet" / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "T1", "1": "T1b"}, "labels": {"background": 0}, "numTraining": 2, "file_ending": ".nii.gz"})
    )
    config = load_config(
        PretrainConfig, "cpu-small", ["model.roi=[64,32,32]", "data.margin=[8,8,8]", "train.workers=0"], presets="pretrain"
    )
    for name, channels in (("folder", 1), ("msd/dataset.json", 1), ("nnunet", 2), ("brats", 4)):
        cases = discover_cases([tmp_path / name], splits=("training", "validation"))
        assert len(cases) == 2 and all(len(c.images) == channels for c in cases), name
        item = view_transforms(config)(stored_records(cases, config, tmp_path / "stores" / name.replace("/", "_"))[0])
        assert item["x"].shape == item["y"].shape == (channels, 64, 32, 32), name
        assert torch.all(item["offset"].abs() <= 8)
        assert type(item["x"]) is torch.Tensor


def test_views_overlap_by_their_offset(mni_t1):
    """Without target augmentation, y equals x shifted by the offset over their overlap."""
    from gmim.pretraining.views import SiameseViewsd

    views = SiameseViewsd((32, 32, 32), (8, 8, 8))
    views.set_random_state(seed=3)
    image = torch.from_numpy(mni_t1[50:100, 60:110, 40:90].copy())[None]
    for _ in range(5):
        item = views({"image": image})
        dz, dy, dx = item["offset"].tolist()
        x, y = item["x"][0], item["y"][0]
        sx = [slice(max(d, 0), 32 + min(d, 0)) for d in (dz, dy, dx)]
        sy = [slice(max(-d, 0), 32 + min(-d, 0)) for d in (dz, dy, dx)]
        torch.testing.assert_close(x[tuple(sx)], y[tuple(sy)])
    small = views({"image": image[:, :20, :20, :20]})  # smaller than the region: padded
    assert small["x"].shape == (1, 32, 32, 32)


@pytest.mark.parametrize("padding, numpy_mode", [("zero", "constant"), ("symmetric", "symmetric")])
def test_views_of_a_small_volume_are_padded_with_zeros_or_mirrored(mni_t1, padding, numpy_mode):
    """The prototype mirrors ([1,2,3,4] → [2,1,1,2,3,4,4,3]); both centre the volume in the region."""
    from gmim.pretraining.views import SiameseViewsd

    volume = mni_t1[80:92, 90:100, 70:78]
    item = SiameseViewsd((16, 16, 16), (0, 0, 0), padding=padding)({"image": torch.from_numpy(volume.copy())[None]})
    expected = np.pad(volume, [(2, 2), (3, 3), (4, 4)], mode=numpy_mode)
    np.testing.assert_array_equal(item["x"][0].numpy(), expected)
    line = SiameseViewsd((8, 1, 1), (0, 0, 0), padding=padding)({"image": torch.arange(1.0, 5.0).view(1, 4, 1, 1)})
    assert line["x"].flatten().tolist() == ([0, 0, 1, 2, 3, 4, 0, 0] if padding == "zero" else [2, 1, 1, 2, 3, 4, 4, 3])


def test_target_augmentation_per_batch_draws_once_from_the_batch_range(brains, tmp_path):
    """data.target_augmentation=batch: the loader leaves y alone; the step augments the batch as one
    array, so one gamma maps both samples through the batch's min and max."""
    from gmim.pretraining.views import target_augmentation

    config = load_config(
        PretrainConfig,
        "cpu-small",
        ["model.roi=[64,32,32]", "data.margin=[8,8,8]", "train.workers=0", "data.target_augmentation=batch"],
        presets="pretrain",
    )
    records = stored_records(discover_cases([brains]), config, tmp_path / "store")
    item = view_transforms(config, augment_target=False)(records[0])
    dz, dy, dx = item["offset"].tolist()  # y untouched: it equals x over their overlap
    sx = tuple(slice(max(d, 0), n + min(d, 0)) for d, n in zip((dz, dy, dx), (64, 32, 32)))
    sy = tuple(slice(max(-d, 0), n + min(-d, 0)) for d, n in zip((dz, dy, dx), (64, 32, 32)))
    torch.testing.assert_close(item["x"][0][sx], item["y"][0][sy])
    batch = torch.stack([torch.linspace(0, 1, 8).view(1, 2, 2, 2), torch.linspace(2, 4, 8).view(1, 2, 2, 2)])
    augmentation = target_augmentation("y").transforms[0]  # the contrast: gamma over the batch's range
    augmentation.set_random_state(seed=0)
    for _ in range(20):
        out = augmentation({"y": batch.clone()})["y"]
        if not torch.equal(out, batch):
            break
    gamma = augmentation.adjuster.gamma_value
    low, span = batch.min(), batch.max() - batch.min()
    torch.testing.assert_close(torch.as_tensor(out), ((batch - low) / (span + 1e-7)) ** gamma * span + low)
    # training steps with it, symmetric padding and no foreground crop: the prototype preset's run below


@pytest.mark.parametrize("name", preset_names("pretrain"))
def test_presets_parse(name):
    config = load_config(PretrainConfig, name, presets="pretrain")
    assert all(n % 32 == 0 for n in config.model.roi)
    assert set(preset_names("pretrain")) >= {"brats2021", "ct", "cpu-small", "prototype", "prototype-brats2021"}


@pytest.mark.parametrize("as_run, as_described", [("prototype", "ct"), ("prototype-brats2021", "brats2021")])
def test_prototype_presets_are_the_described_runs_with_the_as_run_settings(as_run, as_described):
    from gmim.config import flatten

    ran = flatten(asdict(load_config(PretrainConfig, as_run, presets="pretrain")))
    described = flatten(asdict(load_config(PretrainConfig, as_described, presets="pretrain")))
    assert {k: v for k, v in ran.items() if described[k] != v} == AS_RUN
    assert len(AS_RUN) == 6  # docs/method.md §9: cells, reconstruction mean, merging, padding, crop, augmentation


@pytest.mark.slow
def test_prototype_preset_runs_end_to_end(brains, tmp_path):
    from gmim.swin.merging import patch_merging

    out = tmp_path / "prototype"
    assert run_cli("pretrain", brains, "--out", out, "--config", "prototype", "--steps", "2", "--modality", "mri", *SMALL_PRETRAIN) == 0
    config = load_config(PretrainConfig, out / "config.yaml")
    assert config.masking.cells == "prototype" and config.model.patch_merging == "monai-legacy"  # the prototype's is MONAI < 1.5's
    assert (config.data.target_augmentation, config.data.padding, config.data.crop_foreground) == ("batch", "symmetric", False)
    network = SwinUNETR(in_channels=1, out_channels=1, feature_size=12, downsample=patch_merging("prototype"))
    network.swinViT.load_state_dict(torch.load(out / "encoder.pt", weights_only=True))


def test_bad_inputs_exit_2_with_one_line(brains, tmp_path, capsys, mni_t1):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(brains, corrupt)
    (corrupt / "broken.nii.gz").write_bytes((brains / "icbm_a.nii.gz").read_bytes()[:200])
    nan = mni_t1[60:124:2, 60:124:2, 50:114:2].copy()
    nan[3, 3, 3] = np.nan
    save(tmp_path / "nan" / "nan.nii.gz", nan)
    save(tmp_path / "nan" / "ok.nii.gz", mni_t1[60:124:2, 60:124:2, 50:114:2])
    (tmp_path / "empty").mkdir()
    flat = tmp_path / "flat"
    shutil.copytree(brains, flat)
    nib.save(nib.Nifti1Image(mni_t1[60:124, 60:124, 80].astype(np.float32), np.eye(4)), flat / "slice.nii.gz")
    cases = [
        ([flat], [], "slice.nii.gz: a 2D image (64×64), expected 3D"),
        ([corrupt], [], "broken.nii.gz"),
        ([tmp_path / "nan"], [], "NaN"),
        ([tmp_path / "empty"], [], "empty"),
        ([tmp_path / "missing"], [], "missing"),
        ([brains], ["--set", "train.stepz=3"], "unknown key 'train.stepz'"),
        ([brains], ["--set", "train.lr=fast"], "train.lr"),
        ([brains], ["--roi", "48"], "model.roi"),
        ([brains], ["--config", "nope"], "nope"),
        ([brains], ["--set", "masking.decay=2"], "masking.decay"),
        ([brains], ["--lr", "inf"], "--lr inf: 'train.lr' must be positive and finite, got inf"),
        ([brains], ["--batch-size", "8"], "train.batch_size 8 is larger than the 4 training volume(s)"),
    ]
    for data, extra, expected in cases:
        code = run_cli("pretrain", *data, "--out", tmp_path / "out_bad", "--steps", "1", *SMALL_PRETRAIN, *extra)
        err = capsys.readouterr().err
        last = err.replace("\r", "\n").strip().splitlines()[-1]  # after any progress bar
        assert code == 2, (expected, err)
        assert last.startswith("gmim pretrain: error:") and expected in last and "Traceback" not in err, (expected, err)
        assert "axcodes" not in err  # refused before MONAI's orientation could warn
    assert not (tmp_path / "out_bad" / "last.pt").exists()


def test_file_corrupt_past_its_header_named_by_preparation(tmp_path, capsys, mni_t1):
    """Headers read, voxels do not: the preparing process names the file, and the store remembers
    it, so that the next run names it again without reading it."""
    rng = np.random.default_rng(0)
    for name in ("cut_a.nii.gz", "cut_b.nii.gz"):
        path = save(tmp_path / "data" / name, mni_t1[60:124:2, 60:124:2, 50:114:2])
        data = path.read_bytes()  # the header reads, the compressed voxels after it do not
        half = len(data) // 2
        path.write_bytes(data[:half] + rng.integers(0, 256, len(data) - half, dtype=np.uint8).tobytes())
    for _attempt in range(2):
        code = run_cli(
            "pretrain", tmp_path / "data", "--out", tmp_path / "run", "--steps", "1", *SMALL_PRETRAIN, "--store", tmp_path / "stores"
        )
        err = capsys.readouterr().err
        last = err.replace("\r", "\n").strip().splitlines()[-1]
        assert code == 2 and "Traceback" not in err, err
        assert last.startswith("gmim pretrain: error:") and ".nii.gz: cannot be loaded" in last and "cut_" in last, err
        assert not multiprocessing.active_children()  # the preparing processes ended with the run
    entries = [json.loads(p.read_text()) for p in (tmp_path / "stores").glob("*/volumes/*.json")]
    assert entries and all("cannot be loaded" in e["error"] for e in entries)


@pytest.mark.slow
def test_init_from_swin_unetr_self_supervised_weights_skipping_a_bad_volume(brains, tmp_path, capsys):
    """Continue pre-training from weights MONAI 1.4 made, in the layout of Swin UNETR's
    model_swinvit.pt, on a folder with a file that is no image (one run for both): the run builds
    MONAI < 1.5's patch merging and says why, its encoder (a step at a vanishing learning rate) still
    computes what MONAI 1.4 computed (``fixtures/monai14``), and --skip-bad goes on without the file
    and counts it."""
    corrupt = tmp_path / "corrupt"
    shutil.copytree(brains, corrupt)
    (corrupt / "broken.nii.gz").write_bytes(b"not an image at all")
    saved = monai_self_supervised(monai14_state("v1"))
    torch.save(saved, tmp_path / "model_swinvit.pt")
    with pytest.warns(UserWarning, match="broken.nii.gz"):
        assert (
            run_cli(
                "pretrain",
                corrupt,
                "--out",
                tmp_path / "run",
                "--steps",
                "1",
                *SMALL_PRETRAIN,
                "--set",
                "train.lr=1e-12",
                "--init",
                tmp_path / "model_swinvit.pt",
                "--skip-bad",
            )
            == 0
        )
    out = capsys.readouterr().out
    assert "skipped 1 bad volume(s)" in out
    heads = [k for k in saved["state_dict"] if not k.startswith(("module.patch_embed", "module.layers"))]
    total = len(saved["state_dict"]) - len(heads)
    assert f"{total} of {total} tensors loaded" in out and f"unexpected (ignored): {len(heads)}" in out
    assert "patch merging monai-legacy (MONAI < 1.5's merging): MONAI self-supervised (model_swinvit.pt) weights were trained" in out
    report = json.loads((tmp_path / "run" / "weights_report.json").read_text())  # written by the loop, for every method
    assert report["layout"] == "MONAI self-supervised (model_swinvit.pt)" and len(report["matched"]) == total
    assert report["patch_merging"]["name"] == "monai-legacy" and report["patch_merging"]["reason"] == "layout"
    config = load_config(PretrainConfig, tmp_path / "run" / "config.yaml")
    assert config.model.patch_merging == "monai-legacy"
    model = build_model(config).eval()  # the encoder as the run records it, with the weights it saved
    model.encoder.load_state_dict(torch.load(tmp_path / "run" / "encoder.pt", weights_only=True))
    assert_hidden_states(model.encoder, "v1")
    assert run_cli("pretrain", brains, "--out", tmp_path / "bad", "--steps", "1", *SMALL_PRETRAIN, "--init", tmp_path / "nope.pt") == 2
    assert "nope.pt" in capsys.readouterr().err


def test_wrong_channel_count_is_refused(brains, tmp_path, capsys, mni_t1):
    mixed = tmp_path / "mixed"
    shutil.copytree(brains, mixed)
    two_channels = np.stack([mni_t1[60:124:2, 60:124:2, 50:114:2]] * 2, axis=-1)
    save(mixed / "two_channels.nii.gz", two_channels)
    assert run_cli("pretrain", mixed, "--out", tmp_path / "run", "--steps", "1", *SMALL_PRETRAIN) == 2
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "two_channels.nii.gz: a 4D image (32×32×32×2)" in last and "one 3D volume per file" in last


@pytest.mark.slow
def test_options_beyond_the_prototype_run_end_to_end(brains, tmp_path):
    """Aligned and standardised correlation, the variance term, an EMA target and learned mask tokens, all masks on."""
    options = [
        "loss.align_overlap=true",
        "loss.standardize=true",
        "loss.variance_weight=1.0",
        "model.target_momentum=0.9",
        "model.learned_mask_token=true",
        "masking.drop_probability=1.0",
    ]
    assert (
        run_cli(
            "pretrain",
            brains,
            "--out",
            tmp_path / "run",
            "--steps",
            "1",
            *SMALL_PRETRAIN,
            *[arg for option in options for arg in ("--set", option)],
        )
        == 0
    )
    checkpoint = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert any(key.startswith("target_encoder.") for key in checkpoint)
    assert any(key.startswith("mask_tokens.") for key in checkpoint)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["train/loss"]) and np.isfinite(r["train/variance"]) for r in records if "train/loss" in r)
    assert all(np.isfinite(v) for r in records for k, v in r.items() if k.startswith("val/health/"))


@pytest.mark.slow
def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(brains, tmp_path, capsys):
    out = tmp_path / "run"
    code = run_cli("pretrain", brains, "--out", out, "--steps", "4", *SMALL_PRETRAIN, "--lr", "1e30", "--set", "train.checkpoint_every=1")
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert code == 2 and "training diverged" in last and "last.pt holds step 1" in last, last
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 1
    assert all(torch.isfinite(v).all() for v in torch.load(out / "encoder.pt", weights_only=True).values())


@pytest.mark.slow
def test_a_busy_run_folder_is_refused_and_a_stale_lock_taken_over(brains, tmp_path, capsys):
    """Two runs into one folder would mix their outputs: the second is refused while the first lives."""
    out = tmp_path / "run"
    out.mkdir()
    lock = {"host": socket.gethostname(), "command": "finetune", "since": "2026-11-27 10:00:00"}
    (out / ".gmim.lock").write_text(json.dumps({**lock, "pid": os.getpid()}))
    assert run_cli("pretrain", brains, "--out", out, "--steps", "1", *SMALL_PRETRAIN) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"in use by gmim finetune (process {os.getpid()} on {lock['host']}" in last, last
    ended = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    (out / ".gmim.lock").write_text(json.dumps({**lock, "pid": ended}))
    assert run_cli("pretrain", brains, "--out", out, "--steps", "1", *SMALL_PRETRAIN) == 0
    assert "taking it over" in capsys.readouterr().err
    assert not (out / ".gmim.lock").exists() and (out / "encoder.pt").is_file()


@pytest.mark.slow
def test_compiled_run_traces_one_graph_and_saves_plain_weights(brains, tmp_path, compile_counters):
    """train.compile: one graph whichever of a1–a3 a step masks (no recompiles), and checkpoints keyed
    like the module's own state_dict; a resume may turn compilation off."""
    out = tmp_path / "compiled"
    common = ["pretrain", brains, "--out", out, "--config", "cpu-small", *SMALL_PRETRAIN, "--set", "masking.drop_probability=0.5"]
    assert run_cli(*common, "--steps", "4", "--set", "train.compile=true") == 0
    assert compile_counters["stats"]["unique_graphs"] == 1 and not compile_counters["recompiles"]
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    assert set(checkpoint["model"]) == set(build_model(load_config(PretrainConfig, out / "config.yaml", [])).state_dict())
    assert run_cli(*common, "--resume", "--steps", "5") == 0
