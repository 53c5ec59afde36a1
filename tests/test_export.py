"""gmim export: a fine-tuned model and a pre-trained encoder as folders that plain MONAI and safetensors
load without gmim, that gmim predict and gmim finetune --pretrained take as they take the runs, and
bad inputs named in one line."""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from monai.networks.nets import SwinUNETR
from safetensors.torch import load_file

from gmim.cli import main
from gmim.swin import legacy_merging
from gmim.swin.weights import read_weights

#: Run in a fresh interpreter from inside an export folder: what a user without gmim does with it.
PLAIN_MONAI = """
import json, sys, torch
from monai.networks.nets import SwinUNETR
from safetensors.torch import load_file

config = json.load(open("config.json"))
model = SwinUNETR(**config["monai_arguments"]).eval()
model.load_state_dict(load_file(config["weights"]), strict=True)
arguments = config["monai_arguments"]
with torch.no_grad():
    out = model(torch.zeros(1, arguments["in_channels"], *config["roi"]))
assert tuple(out.shape) == (1, arguments["out_channels"], *config["roi"]), out.shape
assert not [m for m in sys.modules if m == "gmim" or m.startswith("gmim.")], "gmim was imported"
print("loaded without gmim")
"""


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def exported_finetune(finetuned_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "segmentation"
    assert main(["export", str(finetuned_run), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory, mni_t1) -> Path:
    """A real one-step gmim pretrain run on two small ICBM152 crops (64×32×32 views, feature size 12)."""
    data = tmp_path_factory.mktemp("volumes")
    for i, (x, y, z) in enumerate(((40, 50, 30), (60, 60, 50))):
        volume = mni_t1[x : x + 100 : 2, y : y + 100 : 2, z : z + 100 : 2]
        nib.save(nib.Nifti1Image(volume, np.diag([2.0, 2.0, 2.0, 1.0])), data / f"icbm_{i}.nii.gz")
    out = tmp_path_factory.mktemp("pretrain") / "run"
    argv = ["pretrain", str(data), "--out", str(out), "--steps", "1", "--roi", "64", "32", "32", "--feature-size", "12"]
    argv += ["--batch-size", "2", "--workers", "0", "--device", "cpu", "--set", "preprocessing.modality=mri"]
    argv += ["--set", "data.margin=[8,8,8]", "--set", "train.mixed_precision=false", "--set", "train.picture_every=0"]
    assert main(argv) == 0
    return out


def test_finetune_export_loads_in_plain_monai(finetuned_run, exported_finetune):
    assert {p.name for p in exported_finetune.iterdir()} == {"model.safetensors", "config.json", "config.yaml", "README.md"}
    config = json.loads((exported_finetune / "config.json").read_text())
    assert config["kind"] == "segmentation" and config["state_dict_of"] == "SwinUNETR" and config["library_name"] == "monai"
    assert config["monai_arguments"] == {
        "in_channels": 1,
        "out_channels": 2,
        "feature_size": 12,
        "depths": [2, 2, 2, 2],
        "num_heads": [3, 6, 12, 24],
        "use_v2": False,
        "spatial_dims": 3,
        "downsample": "merging",
    }
    assert config["input"]["modality"] == "mri" and config["input"]["spacing"] == [4.0, 4.0, 4.0] and config["roi"] == [64, 64, 32]
    assert "z-score" in config["input"]["intensity"]["description"]
    assert config["task"]["labels"] == {"background": 0, "foreground": 1} and config["task"]["output_channels"] == [
        "background",
        "foreground",
    ]
    assert config["gmim"]["patch_merging"] == "monai" and config["gmim"]["command"] == "gmim finetune"
    assert config["gmim"]["weights_from"] == "best.pt"
    assert (exported_finetune / "config.yaml").read_bytes() == (finetuned_run / "config.yaml").read_bytes()

    best = torch.load(finetuned_run / "best.pt", weights_only=True)
    exported = load_file(str(exported_finetune / "model.safetensors"))
    assert exported.keys() == best["model"].keys() and all(torch.equal(exported[k], v) for k, v in best["model"].items())

    card = (exported_finetune / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front == {"library_name": "monai", "tags": ["medical-imaging", "3d", "segmentation", "swin-unetr", "gmim"]}
    recorded = json.loads((finetuned_run / "best.json").read_text())
    assert f"| foreground | {recorded['dice']['foreground']:.4f} |" in card
    assert "training cases: 3; validation cases: 1 (splits.json)" in card and "## Load it without gmim" in card

    done = subprocess.run([sys.executable, "-c", PLAIN_MONAI], cwd=exported_finetune, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loaded without gmim" in done.stdout


def test_predict_with_the_export_gives_the_runs_labels(finetuned_run, exported_finetune, brain_extraction, tmp_path):
    image = brain_extraction / "itk_noisy.nii.gz"
    for model, out in ((finetuned_run, tmp_path / "run"), (exported_finetune, tmp_path / "export")):
        assert main(["predict", str(model), str(image), "--out", str(out), "--device", "cpu"]) == 0
    from_run, from_export = nib.load(tmp_path / "run" / "itk_noisy.nii.gz"), nib.load(tmp_path / "export" / "itk_noisy.nii.gz")
    assert np.array_equal(from_run.affine, from_export.affine)
    assert np.array_equal(np.asarray(from_run.dataobj), np.asarray(from_export.dataobj))


@pytest.mark.slow
def test_pretrain_export_is_the_encoder(pretrain_run, tmp_path, capsys):
    out = tmp_path / "encoder"
    assert main(["export", str(pretrain_run), "--out", str(out)]) == 0
    encoder = torch.load(pretrain_run / "encoder.pt", weights_only=True)
    exported = load_file(str(out / "model.safetensors"))
    assert exported.keys() == encoder.keys() and all(torch.equal(exported[k], v) for k, v in encoder.items())

    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "encoder" and config["state_dict_of"] == "SwinUNETR.swinViT" and "task" not in config
    assert config["monai_arguments"]["out_channels"] == 1 and "placeholder" in config["notes"][0]
    SwinUNETR(**config["monai_arguments"]).swinViT.load_state_dict(exported, strict=True)

    # gmim finetune --pretrained DIR reads the folder: the encoder's tensors, the recorded patch merging
    weights = read_weights(out)
    assert weights.tensors.keys() == {f"swinViT.{k}" for k in encoder}
    assert all(torch.equal(weights.tensors[f"swinViT.{k}"], v) for k, v in encoder.items())
    assert weights.architecture.feature_size == 12 and weights.architecture.patch_merging == "monai"

    card = (out / "README.md").read_text()
    assert "- self-supervised\n" in card and "optimizer steps done: 1 of 1" in card and "| variation, final |" in card
    assert "L = 1 · L_rec + 0.005 · L_cc" in card and "model.swinViT.load_state_dict" in card

    assert main(["predict", str(out), str(out / "config.yaml"), "--out", str(tmp_path / "p")]) == 2
    assert "an exported encoder" in _one_error_line(capsys)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("merging", "recorded", "downsample"), [("monai-v2", "monai-v2", "mergingv2"), ("prototype", "monai-legacy", None)]
)
def test_patch_merging_other_than_monais_is_said(pretrain_run, tmp_path, merging, recorded, downsample):
    """A run whose patch merging MONAI builds only when told (mergingv2), or only from the class the
    export ships (MONAI < 1.5's; "prototype" is another name for it)."""
    run = tmp_path / "run"
    run.mkdir()
    config = yaml.safe_load((pretrain_run / "config.yaml").read_text())
    config["model"]["patch_merging"] = merging
    config["preprocessing"].update(modality="ct", window=[-175.0, 250.0])
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copyfile(pretrain_run / "encoder.pt", run / "encoder.pt")
    out = tmp_path / "export"
    assert main(["export", str(run), "--out", str(out)]) == 0

    exported = json.loads((out / "config.json").read_text())
    assert exported["gmim"]["patch_merging"] == recorded and exported["monai_arguments"].get("downsample") == downsample
    assert (
        exported["input"]["intensity"]["window"] == [-175.0, 250.0]
        and "[0, 1] and clipped" in exported["input"]["intensity"]["description"]
    )
    assert read_weights(out).architecture.patch_merging == recorded
    card = (out / "README.md").read_text()
    if recorded == "monai-legacy":
        note = exported["notes"][-1]
        assert "MONAI < 1.5's PatchMerging" in note and "downsample=LegacyPatchMerging" in note and "legacy_merging.py" in note
        assert "**Patch merging**" in card and "another function" in card and "from legacy_merging import LegacyPatchMerging" in card
        assert (out / "legacy_merging.py").read_bytes() == Path(inspect.getfile(legacy_merging)).read_bytes()
    else:
        assert 'downsample="mergingv2"' in card and not (out / "legacy_merging.py").exists()


def _config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text("task:\n  labels: {background: 0, brain: 1}\nmodel:\n  in_channels: 1\n")
    return folder


def _truncated_best(folder: Path) -> Path:
    _config(folder)
    torch.save({"model": {"out.conv.conv.weight": torch.zeros(2, 12, 1, 1, 1)}, "step": 3}, folder / "best.pt")
    data = (folder / "best.pt").read_bytes()
    (folder / "best.pt").write_bytes(data[: len(data) // 2])
    return folder


def _half_written(folder: Path) -> Path:
    """A run folder whose config.yaml has not been resolved yet (no model.in_channels)."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("task:\n  labels: {background: 0, brain: 1}\n")
    return folder


@pytest.mark.parametrize(
    ("make", "out", "options", "message"),
    [
        pytest.param(lambda tmp: tmp / "nothing", "o", [], "nothing: no such run folder", id="missing"),
        pytest.param(lambda tmp: tmp, "o", [], "{tmp}: not a gmim run folder (no config.yaml)", id="not-a-run"),
        pytest.param(
            lambda tmp: _config(tmp / "run"), "o", [], "run: a gmim finetune run without weights (no best.pt or last.pt)", id="no-weights"
        ),
        pytest.param(
            lambda tmp: _config(tmp / "run"),
            "o",
            ["--format", "monai-bundle"],
            "run: a gmim finetune run without weights (no best.pt or last.pt)",
            id="bundle-no-weights",
        ),
        pytest.param(
            lambda tmp: _half_written(tmp / "run"),
            "o",
            ["--format", "monai-bundle"],
            "run/config.yaml: model.in_channels is not recorded",
            id="bundle-unresolved",
        ),
        pytest.param(lambda tmp: _truncated_best(tmp / "run"), "o", [], "run/best.pt: not a readable PyTorch checkpoint", id="truncated"),
        pytest.param(lambda tmp: _config(tmp / "run"), "taken", [], "--out {tmp}/taken: is a file, not a folder", id="out-is-a-file"),
        pytest.param(lambda tmp: _config(tmp / "run"), "run", [], "--out {tmp}/run: is the run folder", id="out-is-the-run"),
        pytest.param(
            lambda tmp: _config(tmp / "run"),
            "full",
            ["--format", "monai-bundle"],
            "--out {tmp}/full: exists and is not empty; export into a new or empty folder",
            id="out-not-empty",
        ),
        pytest.param(
            lambda tmp: _config(tmp / "run"),
            "o",
            ["--format", "onnx"],
            "--format onnx: unknown; one of huggingface, monai-bundle",
            id="unknown-format",
        ),
    ],
)
def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys, make, out, options, message):
    (tmp_path / "taken").write_text("a file")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("someone's")
    run = make(tmp_path)
    assert main(["export", str(run), "--out", str(tmp_path / out), *options]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("gmim export: error: ") and message.format(tmp=tmp_path) in line
    assert not (tmp_path / "o").exists() and [p.name for p in (tmp_path / "full").iterdir()] == ["notes.txt"]  # nothing written
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_pretraining_run_is_no_bundle(tmp_path, gmim_encoder, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("masking: {}\nmodel:\n  in_channels: 1\n  feature_size: 12\n")
    shutil.copyfile(gmim_encoder, run / "encoder.pt")
    assert main(["export", str(run), "--out", str(tmp_path / "o"), "--format", "monai-bundle"]) == 2
    line = _one_error_line(capsys)
    assert f"{run}: a gmim pretrain run (an encoder, no task): a MONAI bundle here is a segmentation model" in line
    assert "--format huggingface" in line and not (tmp_path / "o").exists()
