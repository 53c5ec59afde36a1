"""gmim finetune on real scans: a brain-extraction task from a gmim encoder and from scratch, exact
resume, BraTS-style regions and multi-class labels, and bad input refused before any work."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from conftest import SMALL_FINETUNE
from gmim.cli import main
from gmim.config import load_config
from gmim.engine.metrics import read_metrics
from gmim.segmentation.config import FinetuneConfig


def test_from_gmim_encoder(finetuned_run, gmim_encoder):
    run = finetuned_run
    for name in ("config.yaml", "splits.json", "weights_report.json", "best.pt", "last.pt", "best.json"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    report = json.loads((run / "weights_report.json").read_text())
    encoder = torch.load(gmim_encoder, weights_only=True)
    assert sorted(report["matched"]) == sorted(f"swinViT.{k}" for k in encoder)
    assert report["missing"] and not report["unexpected"] and not report["shape_mismatched"]
    assert json.loads((run / "splits.json").read_text()) == {"training": ["itk_noisy", "mni", "mni_bias"], "validation": ["itk_t1"]}
    config = load_config(FinetuneConfig, run / "config.yaml")  # what gmim predict will read
    assert config.task.labels == {"background": 0, "foreground": 1} and config.task.channels == ["channel0"]
    assert config.model.in_channels == 1 and config.preprocessing.spacing == (4.0, 4.0, 4.0)
    assert config.model.init == str(gmim_encoder)  # the initial weights are part of the run's record
    assert any("train/loss" in r for r in read_metrics(run / "metrics.jsonl"))
    best = json.loads((run / "best.json").read_text())
    assert 0 <= best["mean_dice"] <= 1 and set(best["cases"]) == {"itk_t1"}
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["step"] == 3 and {"optimizer", "scheduler", "rng"} <= set(last)


@pytest.mark.slow
def test_from_scratch_with_gradient_checkpointing_and_the_legacy_patch_merging(tmp_path, brain_extraction, capsys):
    from gmim.segmentation.network import build_network
    from gmim.swin.merging import LegacyPatchMerging

    out = tmp_path / "scratch"
    code = main(
        [
            "finetune",
            str(brain_extraction / "brain.json"),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--fold",
            "all",
            "--labelled-cases",
            "2",
            "--set",
            "model.gradient_checkpointing=true",
            "--patch-merging",
            "prototype",  # another name of monai-legacy
            *SMALL_FINETUNE,
        ]
    )
    assert code == 0
    config = load_config(FinetuneConfig, out / "config.yaml")  # what gmim predict builds its network from
    assert config.model.patch_merging == "monai-legacy"
    network = build_network(config.model, out_channels=2)
    assert isinstance(network.swinViT.layers1[0].downsample, LegacyPatchMerging)
    network.load_state_dict(torch.load(out / "best.pt", weights_only=True)["model"])
    assert "no validation cases" in capsys.readouterr().out
    assert not (out / "weights_report.json").exists()
    assert len(json.loads((out / "splits.json").read_text())["training"]) == 2
    assert torch.load(out / "best.pt", weights_only=True)["step"] == 2  # one epoch of 2 cases, batch 1


@pytest.mark.slow
def test_frozen_encoder_keeps_the_pretrained_weights(tmp_path, brain_extraction, gmim_encoder):
    out = tmp_path / "frozen"
    assert (
        main(
            [
                "finetune",
                str(brain_extraction / "brain.json"),
                "--out",
                str(out),
                "--pretrained",
                str(gmim_encoder),
                "--freeze-encoder",
                "--steps",
                "1",
                "--fold",
                "all",
                "--labelled-cases",
                "1",
                *SMALL_FINETUNE,
            ]
        )
        == 0
    )
    trained = torch.load(out / "best.pt", weights_only=True)["model"]
    encoder = torch.load(gmim_encoder, weights_only=True)
    assert all(torch.equal(trained[f"swinViT.{k}"], v) for k, v in encoder.items())
    report = json.loads((out / "weights_report.json").read_text())  # no encoder tensor left fresh without a word
    assert sorted(report["matched"]) == sorted(f"swinViT.{k}" for k in encoder) == sorted(k for k in trained if k.startswith("swinViT."))
    assert [g["name"] for g in torch.load(out / "last.pt", weights_only=True)["optimizer"]["param_groups"]] == ["decoder"]


@pytest.mark.slow
def test_compiled_finetuning_traces_one_graph_and_saves_swin_unetr_weights(tmp_path, brain_extraction, compile_counters):
    from monai.networks.nets import SwinUNETR

    out = tmp_path / "compiled"
    assert (
        main(
            [
                "finetune",
                str(brain_extraction / "brain.json"),
                "--out",
                str(out),
                "--steps",
                "2",
                "--fold",
                "all",
                "--labelled-cases",
                "2",
                "--set",
                "train.compile=true",
                *SMALL_FINETUNE,
            ]
        )
        == 0
    )
    # two graphs: MONAI's SwinUNETR.forward checks the input size with numpy first, then one graph
    assert compile_counters["stats"]["unique_graphs"] == 2 and not compile_counters["recompiles"]
    network = SwinUNETR(in_channels=1, out_channels=2, feature_size=12)
    network.load_state_dict(torch.load(out / "best.pt", weights_only=True)["model"])  # strict


def _weights(path):
    return torch.load(path, weights_only=True)


@pytest.mark.slow
def test_stop_after_sigterm_and_resume_continue_exactly(tmp_path, brain_extraction):
    """train.stop_after, then SIGTERM in the middle of the resumed run, then a second resume (from a
    last.pt in the older layout): the weights of 4 uninterrupted steps, bit for bit."""
    data = str(brain_extraction / "brain.json")
    options = ["--steps", "4", "--fold", "all", "--label-fraction", "0.5", *SMALL_FINETUNE, "--set", "train.log_every=1"]
    assert main(["finetune", data, "--out", str(tmp_path / "straight"), *options]) == 0
    split = tmp_path / "split"
    assert main(["finetune", data, "--out", str(split), *options, "--set", "train.stop_after=1"]) == 0
    assert _weights(split / "last.pt")["step"] == 1 and not (split / "best.pt").exists()
    process = subprocess.Popen(
        [sys.executable, "-m", "gmim.cli", "finetune", data, "--out", str(split), *options, "--resume"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not any(r["step"] > 1 for r in read_metrics(split / "metrics.jsonl")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-2000:]
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "continue with --resume" in out + err and "Traceback" not in err
    interrupted = _weights(split / "last.pt")
    assert 1 < interrupted["step"] < 4
    # in the layout of the loops before the one loop: no "method", the best score as "best_dice"
    torch.save({k: v for k, v in interrupted.items() if k not in ("method", "best_score")} | {"best_dice": -1.0}, split / "last.pt")
    assert main(["finetune", data, "--out", str(split), *options, "--resume"]) == 0
    straight, resumed = _weights(tmp_path / "straight" / "last.pt"), _weights(split / "last.pt")
    assert resumed["step"] == 4
    for key, value in straight["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, msg=key)
    assert [r["step"] for r in read_metrics(split / "metrics.jsonl")] == [1, 2, 3, 4]
    assert torch.equal(_weights(split / "best.pt")["model"]["out.conv.conv.weight"], straight["model"]["out.conv.conv.weight"])


@pytest.mark.slow
def test_one_loader_for_a_run_of_several_epochs(tmp_path, brain_extraction, monkeypatch):
    """3 epochs of 1 case, validation and checkpoints on: the loader's workers start once."""
    iterators = []
    original = torch.utils.data.DataLoader.__iter__
    monkeypatch.setattr(torch.utils.data.DataLoader, "__iter__", lambda self: iterators.append(self) or original(self))
    out = tmp_path / "run"
    assert (
        main(
            [
                "finetune",
                str(brain_extraction / "brain.json"),
                "--out",
                str(out),
                "--epochs",
                "3",
                "--labelled-cases",
                "1",
                "--fold",
                "0",
                *SMALL_FINETUNE,
                "--workers",
                "1",
                "--set",
                "train.validate_every=2",
                "--set",
                "train.checkpoint_every=1",
            ]
        )
        == 0
    )
    assert len(iterators) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == summary["total_steps"] == 3 and summary["completed"] and summary["validations"] == 2
    assert 0 < summary["validation_share"] < 1 and 0 < summary["checkpoint_share"] < 1 and summary["volumes_per_s"] > 0
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "val/mean_dice" in r] == [2, 3]  # every 2 steps, and the last


def _brats_case(folder, name, t1, affine, seed):
    """Four MRI channels from a real T1 crop (noisy variants) and nested generated tumour labels 2 ⊃ 1 ⊃ 4."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for index, modality in enumerate(("flair", "t1", "t1ce", "t2")):
        channel = t1 * (1 + 0.2 * index) + rng.normal(0, 5, t1.shape).astype(np.float32)
        nib.save(nib.Nifti1Image(channel, affine), folder / f"{name}_{modality}.nii.gz")
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in t1.shape], indexing="ij"))
    centre = np.array(t1.shape)[:, None, None, None] / 2 + rng.integers(-3, 4, (3, 1, 1, 1))
    distance = np.sqrt(((grid - centre) ** 2).sum(0))
    seg = np.select([distance < 4, distance < 7, distance < 11], [4, 1, 2], 0).astype(np.uint8)
    nib.save(nib.Nifti1Image(seg, affine), folder / f"{name}_seg.nii.gz")


@pytest.mark.slow
def test_brats_regions_finetune_predict_evaluate(tmp_path, mni_t1, capsys):
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    for i, start in enumerate(((60, 70, 60), (70, 80, 70), (50, 90, 80))):
        d, h, w = start
        _brats_case(
            tmp_path / "brats" / f"BraTS2021_0000{i}", f"BraTS2021_0000{i}", mni_t1[d : d + 48, h : h + 48, w : w + 40].copy(), affine, i
        )
    run = tmp_path / "run"
    options = [
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
        "--steps",
        "2",
        "--set",
        "data.folds=3",
        "--set",
        "preprocessing.spacing=null",
        "--set",
        "train.samples_per_volume=1",
    ]
    assert main(["finetune", str(tmp_path / "brats"), "--out", str(run), "--config", "brats2021", *options]) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["task"]["kind"] == "regions" and config["model"]["in_channels"] == 4
    assert config["task"]["channels"] == ["flair", "t1", "t1ce", "t2"]
    assert set(json.loads((run / "best.json").read_text())["dice"]) == {"TC", "WT", "ET"}
    capsys.readouterr()

    assert main(["predict", str(run), str(tmp_path / "brats"), "--out", str(tmp_path / "pred"), "--device", "cpu"]) == 0
    prediction = nib.load(tmp_path / "pred" / "BraTS2021_00000.nii.gz")
    assert prediction.shape == (48, 48, 40) and set(np.unique(np.asarray(prediction.dataobj))) <= {0, 1, 2, 4}
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "brats"), "--task", str(run)]) == 0
    table = capsys.readouterr().out
    assert all(region in table for region in ("TC", "WT", "ET", "mean"))
    metrics = json.loads((tmp_path / "pred" / "metrics.json").read_text())
    assert set(metrics["cases"]) == {f"BraTS2021_0000{i}" for i in range(3)} and metrics["names"] == ["TC", "WT", "ET"]


@pytest.mark.slow
def test_nnunet_multiclass_labels_from_dataset_json(tmp_path, mni, capsys):
    root = tmp_path / "Dataset002_Tissue"
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "T1"},
                "labels": {"background": 0, "grey_matter": 1, "white_matter": 2},
                "numTraining": 2,
                "file_ending": ".nii.gz",
            }
        )
    )
    t1 = np.asarray(mni["t1"].dataobj, dtype=np.float32)[::3, ::3, ::3]
    tissue = np.select([np.asarray(mni["wm"].dataobj)[::3, ::3, ::3] > 0.5, np.asarray(mni["gm"].dataobj)[::3, ::3, ::3] > 0.5], [2, 1], 0)
    affine = mni["t1"].affine @ np.diag([3.0, 3.0, 3.0, 1.0])
    for case, scale in (("mni_001", 1.0), ("mni_002", 1.3)):
        nib.save(nib.Nifti1Image(t1 * scale, affine), root / "imagesTr" / f"{case}_0000.nii.gz")
        nib.save(nib.Nifti1Image(tissue.astype(np.uint8), affine), root / "labelsTr" / f"{case}.nii.gz")
    run = tmp_path / "run"
    assert main(["finetune", str(root), "--out", str(run), "--steps", "2", "--fold", "all", *SMALL_FINETUNE]) == 0
    config = load_config(FinetuneConfig, run / "config.yaml")
    assert config.task.labels == {"background": 0, "grey_matter": 1, "white_matter": 2} and config.task.channels == ["T1"]
    assert main(["predict", str(run), str(root / "imagesTr"), "--out", str(tmp_path / "pred"), "--device", "cpu"]) == 0
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.nii.gz")) == ["mni_001.nii.gz", "mni_002.nii.gz"]
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "pred"), str(root), "--task", str(run)]) == 0
    assert "grey_matter" in capsys.readouterr().out


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def _datalist(tmp_path, brain_extraction, label_for_first):
    entries = json.loads((brain_extraction / "brain.json").read_text())["training"]
    entries = [{**e, "image": str(brain_extraction / e["image"]), "label": str(brain_extraction / e["label"])} for e in entries]
    entries[0]["label"] = str(label_for_first)
    path = tmp_path / "list.json"
    path.write_text(json.dumps({"training": entries}))
    return str(path)


def test_bad_input_is_one_line_exit_2(tmp_path, brain_extraction, gmim_encoder, capsys):
    itk = nib.load(brain_extraction / "itk_t1_mask.nii.gz")
    mask = np.asarray(itk.dataobj)
    out = ["--out", str(tmp_path / "run"), "--steps", "1", *SMALL_FINETUNE]

    nib.save(nib.Nifti1Image(mask[:, :, :40], itk.affine), tmp_path / "short.nii.gz")
    line = _error(capsys, ["finetune", _datalist(tmp_path, brain_extraction, tmp_path / "short.nii.gz"), *out])
    assert "short.nii.gz: label shape (128, 128, 40) differs from its image's (128, 128, 62)" in line

    nib.save(nib.Nifti1Image(mask, itk.affine @ np.diag([1.0, 1.0, 1.5, 1.0])), tmp_path / "moved.nii.gz")
    assert "moved.nii.gz: label affine differs" in _error(
        capsys, ["finetune", _datalist(tmp_path, brain_extraction, tmp_path / "moved.nii.gz"), *out]
    )

    nib.save(nib.Nifti1Image(mask * 3, itk.affine), tmp_path / "values.nii.gz")
    line = _error(capsys, ["finetune", _datalist(tmp_path, brain_extraction, tmp_path / "values.nii.gz"), *out])
    assert "values.nii.gz: label values [3] are not in the task" in line

    image = nib.load(brain_extraction / "itk_t1.nii.gz")
    holes = np.asarray(image.dataobj, dtype=np.float32)
    holes[60, 60, 30] = np.inf  # training on it would end with every weight NaN
    nib.save(nib.Nifti1Image(holes, image.affine), tmp_path / "inf.nii.gz")
    entries = json.loads((brain_extraction / "brain.json").read_text())["training"]
    entries = [{"image": str(brain_extraction / e["image"]), "label": str(brain_extraction / e["label"])} for e in entries]
    entries[0]["image"] = str(tmp_path / "inf.nii.gz")
    (tmp_path / "inf.json").write_text(json.dumps({"training": entries}))
    assert "inf.nii.gz: 1 NaN or infinite voxel(s)" in _error(capsys, ["finetune", str(tmp_path / "inf.json"), *out, "--fold", "all"])

    (tmp_path / "corrupt.nii.gz").write_bytes(b"\x1f\x8b" + b"broken" * 10)
    assert "corrupt.nii.gz: not a readable image" in _error(
        capsys, ["finetune", _datalist(tmp_path, brain_extraction, tmp_path / "corrupt.nii.gz"), *out]
    )

    whole = (brain_extraction / "itk_t1.nii.gz").read_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(whole[: len(whole) // 2])  # a readable header, broken voxels
    entries = json.loads((brain_extraction / "brain.json").read_text())["training"]
    entries = [{"image": str(brain_extraction / e["image"]), "label": str(brain_extraction / e["label"])} for e in entries]
    entries[0]["image"] = str(tmp_path / "truncated.nii.gz")
    (tmp_path / "truncated.json").write_text(json.dumps({"training": entries}))
    line = _error(capsys, ["finetune", str(tmp_path / "truncated.json"), *out, "--fold", "all"])
    assert "truncated.nii.gz: cannot be loaded (Compressed file ended" in line

    brats = tmp_path / "brats" / "case1"
    brats.mkdir(parents=True)
    for modality in ("flair", "t1", "t1ce", "seg"):
        shutil.copy(brain_extraction / "itk_t1_mask.nii.gz", brats / f"case1_{modality}.nii.gz")
    assert "without its *_t2 file" in _error(capsys, ["finetune", str(tmp_path / "brats"), *out])

    data = str(brain_extraction / "brain.json")
    assert "model.in_channels 4: the data have 1 channel" in _error(capsys, ["finetune", data, *out, "--set", "model.in_channels=4"])
    assert "--roi 48 64 32: 'model.roi' must be a Swin UNETR crop (each size must be a positive multiple of 32)" in _error(
        capsys, ["finetune", data, *out, "--roi", "48", "64", "32"]
    )
    assert "unknown key 'train.learning_rate'" in _error(capsys, ["finetune", data, *out, "--set", "train.learning_rate=1"])
    assert "--resume: " in _error(capsys, ["finetune", data, *out, "--resume"])
    torch.save(torch.load(gmim_encoder, weights_only=True) | {}, tmp_path / "enc.pt")
    wrong = tmp_path / "f24.pt"
    from monai.networks.nets import SwinUNETR

    torch.save(SwinUNETR(in_channels=1, out_channels=2, feature_size=24).swinViT.state_dict(), wrong)
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "resnet.pt")
    whole = wrong.read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 3])
    torch.save({"swinViT.patch_embed.proj.weight": torch.zeros(12, 1, 2, 2)}, tmp_path / "swin2d.pt")
    for name, expected in (
        ("resnet.pt", "no Swin UNETR encoder in an unknown layout (top-level keys: fc.weight)"),
        ("cut.pt", "not a readable PyTorch checkpoint"),
        ("swin2d.pt", "a 2D Swin"),
    ):
        assert f"{name}: {expected}" in _error(capsys, ["finetune", data, *out, "--pretrained", str(tmp_path / name)])
    line = _error(capsys, ["finetune", data, *out, "--pretrained", str(wrong)])  # SMALL_FINETUNE sets --feature-size 12
    assert "f24.pt: the weights are a Swin UNETR with feature_size 24, but model.feature_size is 12; leave model.feature_size unset" in line
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path, brain_extraction):
    """Data parallel fine-tuning with torchrun (gloo on the CPU): shards, DDP, sharded validation;
    --batch-size is the global batch, so 2 processes see the samples that 1 process sees."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ddp"
    result = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "gmim.cli",
            "finetune",
            str(brain_extraction / "brain.json"),
            "--out",
            str(out),
            "--steps",
            "2",
            "--fold",
            "0",
            "--batch-size",
            "2",
            *SMALL_FINETUNE,
            "--set",
            "train.log_every=1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("run folder:") == 1
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["step"] == 2 and len(last["rng"]) == 2  # both ranks' random states, for an exact resume
    assert set(json.loads((out / "best.json").read_text())["cases"]) == {"itk_t1"}
    one = tmp_path / "one"
    assert (
        main(
            [
                "finetune",
                str(brain_extraction / "brain.json"),
                "--out",
                str(one),
                "--steps",
                "2",
                "--fold",
                "0",
                "--batch-size",
                "2",
                *SMALL_FINETUNE,
                "--set",
                "train.log_every=1",
                "--set",
                "train.validate_every=0",
            ]
        )
        == 0
    )
    losses = [[r["train/loss"] for r in read_metrics(run / "metrics.jsonl") if "train/loss" in r] for run in (one, out)]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)


@pytest.mark.slow
def test_from_finetuned_checkpoint_and_from_a_one_channel_swinvit_for_two_channels(
    tmp_path, finetuned_run, brain_extraction, gmim_encoder, capsys
):
    data = str(brain_extraction / "brain.json")
    short = ["--steps", "1", "--fold", "all", "--labelled-cases", "1", *SMALL_FINETUNE]
    assert main(["finetune", data, "--out", str(tmp_path / "again"), "--pretrained", str(finetuned_run / "best.pt"), *short]) == 0
    report = json.loads((tmp_path / "again" / "weights_report.json").read_text())
    assert not report["missing"] and not report["unexpected"] and not report["shape_mismatched"] and len(report["matched"]) == 159
    assert "159 of 159 tensors loaded" in capsys.readouterr().out

    swinvit = {f"module.{k}".replace(".mlp.linear", ".mlp.fc"): v for k, v in torch.load(gmim_encoder, weights_only=True).items()}
    torch.save({"state_dict": swinvit | {"module.rotation_head.weight": torch.zeros(4, 192)}}, tmp_path / "model_swinvit.pt")
    itk = brain_extraction / "itk_t1.nii.gz"
    two = tmp_path / "two.json"  # a 2-channel case: the T1 twice
    two.write_text(json.dumps({"training": [{"image": [str(itk), str(itk)], "label": str(brain_extraction / "itk_t1_mask.nii.gz")}]}))
    fresh = ["--set", "model.adapt_channels=false"]  # the input layer starts fresh instead of adapted
    assert (
        main(["finetune", str(two), "--out", str(tmp_path / "two"), "--pretrained", str(tmp_path / "model_swinvit.pt"), *short, *fresh])
        == 0
    )
    report = json.loads((tmp_path / "two" / "weights_report.json").read_text())
    assert [m["key"] for m in report["shape_mismatched"]] == ["swinViT.patch_embed.proj.weight"] and not report["adapted"]
    assert report["unexpected"] == ["module.rotation_head.weight"] and len(report["matched"]) == 125
    assert "another shape (left as initialised): swinViT.patch_embed.proj.weight" in capsys.readouterr().out


@pytest.mark.slow
def test_the_architecture_and_channels_come_from_the_weights(tmp_path, brain_extraction):
    """A VoCo release (a Swin UNETR v2 encoder, F 48/96/192: 24 here) with no --feature-size: the run
    builds the weights' architecture; the BraTS-like 2-channel data get the 1-channel input layers
    adapted, and the run folder records both."""
    from monai.networks.nets import SwinUNETR

    torch.manual_seed(3)
    voco = SwinUNETR(in_channels=1, out_channels=2, feature_size=24, use_v2=True).state_dict()
    torch.save({k: v for k, v in voco.items() if not k.startswith(("decoder", "out."))}, tmp_path / "VoCo_SSL_head.pt")
    entries = json.loads((brain_extraction / "brain.json").read_text())["training"]
    two = [{"image": [str(brain_extraction / e["image"])] * 2, "label": str(brain_extraction / e["label"])} for e in entries]
    (tmp_path / "two.json").write_text(json.dumps({"training": two}))
    tiny = [a for a in SMALL_FINETUNE if a not in ("--feature-size", "12")]
    out = tmp_path / "run"
    assert (
        main(
            [
                "finetune",
                str(tmp_path / "two.json"),
                "--out",
                str(out),
                "--steps",
                "1",
                "--fold",
                "all",
                "--labelled-cases",
                "1",
                "--freeze-encoder",
                "--pretrained",
                str(tmp_path / "VoCo_SSL_head.pt"),
                *tiny,
            ]
        )
        == 0
    )
    config = load_config(FinetuneConfig, out / "config.yaml")
    assert (config.model.feature_size, config.model.use_v2, config.model.in_channels) == (24, True, 2)
    report = json.loads((out / "weights_report.json").read_text())
    assert report["layout"] == "VoCo (Swin UNETR v2 encoder)"
    assert {a["key"] for a in report["adapted"]} == {
        "swinViT.patch_embed.proj.weight",
        "encoder1.layer.conv1.conv.weight",
        "encoder1.layer.conv3.conv.weight",
    }
    trained = torch.load(out / "best.pt", weights_only=True)["model"]
    assert torch.equal(trained["swinViT.layers1c.0.layer.conv1.conv.weight"], voco["swinViT.layers1c.0.layer.conv1.conv.weight"])
    torch.testing.assert_close(
        trained["swinViT.patch_embed.proj.weight"], voco["swinViT.patch_embed.proj.weight"].repeat(1, 2, 1, 1, 1) / 2
    )
