"""gmim export --format monai-bundle: a bundle that python -m monai.bundle runs in a process that
cannot import gmim, writing what gmim predict writes, on real MRI and a CT-like scan, with MONAI
< 1.5's patch merging shipped in scripts/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.networks.nets import SwinUNETR
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

from gmim.cli import main
from gmim.config import load_config
from gmim.export import monai_arguments
from gmim.export.bundle import postprocessing_transforms
from gmim.segmentation.config import FinetuneConfig
from gmim.segmentation.network import build_network
from gmim.segmentation.task import Task

#: ``python`` with gmim made unimportable (``import gmim`` raises), then MONAI's bundle command line.
WITHOUT_GMIM = [
    sys.executable,
    "-c",
    "import sys, runpy; sys.modules['gmim'] = None; sys.argv[0] = 'monai.bundle'; runpy.run_module('monai.bundle', run_name='__main__')",
]

#: Run from a bundle's root without gmim: MONAI's shape check, then the logits of the bundle's own
#: network (built and loaded as inference.json says) on the crop in argv[1], saved to argv[2].
VERIFY_AND_LOGITS = """
import runpy, sys
sys.modules["gmim"] = None
crop, out = sys.argv[1:3]
sys.argv = ["monai.bundle", "verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json",
            "--config_file", "configs/inference.json", "--device", "cpu"]
runpy.run_module("monai.bundle", run_name="__main__")
import torch
from monai.bundle import ConfigParser
parser = ConfigParser()
parser.read_config("configs/inference.json")
network = parser.get_parsed_content("network_def").eval()
network.load_state_dict(torch.load("models/model.pt", weights_only=True))
with torch.no_grad():
    torch.save(network(torch.load(crop)), out)
print("merging", type(network.swinViT.layers1[0].downsample).__module__)
"""


def _start(argv: list[str], cwd: Path) -> subprocess.Popen:
    """``argv`` in a process of its own (started while the test computes gmim's side), without PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen) -> str:
    """What the process printed, once it has exited 0."""
    printed, _ = process.communicate(timeout=600)
    assert process.returncode == 0, printed[-4000:]
    return printed


def _bundle_run(bundle: Path, images: Path, out: Path) -> subprocess.Popen:
    """``python -m monai.bundle run`` of ``bundle`` on the images of ``images``, from another folder."""
    argv = ["run", "--config_file", f"{bundle}/configs/inference.json", "--bundle_root", str(bundle), "--dataset_dir", str(images)]
    return _start([*WITHOUT_GMIM, *argv, "--output_dir", str(out)], cwd=out.parent)


def _dice_per_label(ours: np.ndarray, theirs: np.ndarray) -> dict[int, float]:
    return {
        int(v): 2 * float(((ours == v) & (theirs == v)).sum()) / float((ours == v).sum() + (theirs == v).sum())
        for v in np.union1d(np.unique(ours), np.unique(theirs))
    }


def _same_segmentation(bundle_out: Path, predict_out: Path, names: list[str]) -> None:
    """Each image's bundle output (``<name>_seg.nii.gz``) and gmim predict's (``<name>.nii.gz``): the
    same grid, and Dice ≥ 0.99 for every label value either holds (at least two: not a blank map)."""
    for name in names:
        ours, theirs = nib.load(bundle_out / f"{name}_seg.nii.gz"), nib.load(predict_out / f"{name}.nii.gz")
        assert ours.shape == theirs.shape and np.allclose(ours.affine, theirs.affine, atol=1e-4), name
        dice = _dice_per_label(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))
        assert len(dice) >= 2 and min(dice.values()) >= 0.99, (name, dice)


def _reoriented(image: nib.Nifti1Image, axcodes: tuple[str, str, str]) -> nib.Nifti1Image:
    return image.as_reoriented(ornt_transform(io_orientation(image.affine), axcodes2ornt(axcodes)))


def test_bundle_of_an_mri_model_segments_as_gmim_predict(finetuned_run, mni, itk_paths, tmp_path):
    bundle = tmp_path / "bundle"
    assert main(["export", str(finetuned_run), "--out", str(bundle), "--format", "monai-bundle"]) == 0
    files = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()}
    assert files == {
        "configs/metadata.json",
        "configs/inference.json",
        "configs/logging.conf",
        "models/model.pt",
        "docs/README.md",
        "LICENSE",
    }
    metadata = json.loads((bundle / "configs/metadata.json").read_text())
    for key in ("version", "changelog", "monai_version", "pytorch_version", "numpy_version", "required_packages_version"):
        assert metadata[key], key
    image, pred = metadata["network_data_format"]["inputs"]["image"], metadata["network_data_format"]["outputs"]["pred"]
    assert image["modality"] == "MR" and image["num_channels"] == 1 and image["spatial_shape"] == [64, 64, 32]
    assert pred["num_channels"] == 2 and pred["channel_def"] == {"0": "background", "1": "foreground"}
    assert metadata["gmim"]["patch_merging"] == "monai" and metadata["gmim"]["command"] == "gmim finetune"
    best = torch.load(finetuned_run / "best.pt", weights_only=True)["model"]
    shipped = torch.load(bundle / "models/model.pt", weights_only=True)
    assert shipped.keys() == best.keys() and all(torch.equal(shipped[k], v) for k, v in best.items())
    assert "python -m monai.bundle run" in (bundle / "docs/README.md").read_text()

    # the ITK T1 as stored (LSA, 2 × 2 × 3 mm), and the ICBM152 T1 at 3 × 2 × 3 mm, reoriented PIL
    images = tmp_path / "images"
    images.mkdir()
    itk = nib.load(itk_paths["t1"])
    nib.save(nib.Nifti1Image(np.asarray(itk.dataobj, dtype=np.float32), itk.affine), images / "itk.nii.gz")
    icbm = np.asarray(mni["t1"].get_fdata(), dtype=np.float32)[20:180:3, 20:220:2, 10:180:3]
    icbm_affine = mni["t1"].affine @ np.diag([3.0, 2.0, 3.0, 1.0])
    icbm_affine[:3, 3] = (mni["t1"].affine @ [20, 20, 10, 1])[:3]
    nib.save(_reoriented(nib.Nifti1Image(icbm, icbm_affine), ("P", "I", "L")), images / "icbm_pil.nii.gz")

    bundle_run = _bundle_run(bundle, images, tmp_path / "bundle_out")
    assert main(["predict", str(finetuned_run), str(images), "--out", str(tmp_path / "predicted"), "--device", "cpu"]) == 0
    _finish(bundle_run)
    _same_segmentation(tmp_path / "bundle_out", tmp_path / "predicted", ["itk", "icbm_pil"])


@pytest.fixture
def legacy_ct_regions_run(finetuned_run, tmp_path) -> Path:
    """The fine-tuned run's weights under another reading: CT in a HU window, two nested regions
    (sigmoids), MONAI < 1.5's patch merging. The same tensors, another function of the input."""
    run = tmp_path / "legacy_run"
    run.mkdir()
    config = yaml.safe_load((finetuned_run / "config.yaml").read_text())
    config["model"]["patch_merging"] = "monai-legacy"
    config["preprocessing"].update(modality="ct", window=[-100.0, 900.0])
    config["task"].update(kind="regions", labels={"background": 0, "brain": 1, "core": 2}, regions={"brain": [1, 2], "core": [2]})
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "best.pt").write_bytes((finetuned_run / "best.pt").read_bytes())
    return run


def test_bundle_with_the_legacy_merging_computes_its_function(legacy_ct_regions_run, itk_paths, tmp_path):
    """A CT-like scan (the ITK T1's intensities mapped linearly onto -1000…1500 HU: no CT ships in a
    package) through a regions model with MONAI < 1.5's merging, which the bundle ships and imports."""
    run, bundle = legacy_ct_regions_run, tmp_path / "bundle"
    assert main(["export", str(run), "--out", str(bundle), "--format", "monai-bundle"]) == 0
    assert (bundle / "scripts/legacy_merging.py").is_file() and (bundle / "scripts/__init__.py").is_file()
    metadata = json.loads((bundle / "configs/metadata.json").read_text())
    assert metadata["gmim"]["patch_merging"] == "monai-legacy" and "LegacyPatchMerging" in metadata["notes"][0]
    assert metadata["network_data_format"]["inputs"]["image"]["modality"] == "CT"
    assert metadata["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "brain", "1": "core"}
    assert "**Patch merging**" in (bundle / "docs/README.md").read_text()

    images = tmp_path / "images"
    images.mkdir()
    itk = nib.load(itk_paths["t1"])
    t1 = np.asarray(itk.dataobj, dtype=np.float32)
    hounsfield = np.round(-1000 + 2500 * (t1 - t1.min()) / (t1.max() - t1.min())).astype(np.int16)
    nib.save(nib.Nifti1Image(hounsfield, itk.affine), images / "ct.nii.gz")
    bundle_run = _bundle_run(bundle, images, tmp_path / "bundle_out")
    # the bundle's network, built by MONAI from inference.json, against gmim's and MONAI's default merging
    torch.manual_seed(0)
    crop = torch.rand(1, 1, 64, 64, 32)
    torch.save(crop, tmp_path / "crop.pt")
    logits_run = _start([sys.executable, "-c", VERIFY_AND_LOGITS, str(tmp_path / "crop.pt"), str(tmp_path / "logits.pt")], cwd=bundle)
    assert main(["predict", str(run), str(images), "--out", str(tmp_path / "predicted"), "--device", "cpu"]) == 0
    _finish(bundle_run)
    _same_segmentation(tmp_path / "bundle_out", tmp_path / "predicted", ["ct"])

    printed = _finish(logits_run)
    assert "data shape of network is verified" in printed and "merging scripts.legacy_merging" in printed
    theirs = torch.load(tmp_path / "logits.pt", weights_only=True)
    config = load_config(FinetuneConfig, run / "config.yaml")
    weights = torch.load(run / "best.pt", weights_only=True)["model"]
    gmim_network = build_network(config.model, 2).eval()
    gmim_network.load_state_dict(weights)
    monai_default = SwinUNETR(**monai_arguments(config), downsample="merging").eval()
    monai_default.load_state_dict(weights)
    with torch.no_grad():
        ours, default = gmim_network(crop), monai_default(crop)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)  # gmim fuses attention: round-off apart
    assert float((default - ours).norm() / ours.norm()) > 0.01


@pytest.mark.parametrize(
    "task",
    [
        Task(kind="multiclass", labels={"background": 0, "liver": 1, "tumour": 4}),
        Task(kind="regions", labels={"background": 0, "NCR": 1, "ED": 2, "ET": 4}, regions={"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]}),
    ],
    ids=["multiclass", "brats-regions"],
)
def test_bundle_label_maps_are_gmim_predicts(task):
    """The bundle's steps from probabilities on the input's grid to the saved label map (between
    Invertd and SaveImaged), instantiated by MONAI, give Task.to_label_map's values."""
    torch.manual_seed(0)
    probabilities = torch.rand(task.out_channels, 6, 5, 4)
    if task.kind == "multiclass":
        probabilities = probabilities.softmax(0)
    steps = ConfigParser({"steps": {"_target_": "Compose", "transforms": postprocessing_transforms(task)[2:-1]}})
    label_map = steps.get_parsed_content("steps")({"pred": MetaTensor(probabilities)})["pred"]
    assert label_map.shape == (1, 6, 5, 4)
    assert torch.equal(torch.as_tensor(label_map)[0].long(), task.to_label_map(probabilities))


def test_a_failed_export_leaves_nothing(finetuned_run, tmp_path, monkeypatch, capsys):
    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("gmim.export.bundle.torch.save", full_disk)
    assert main(["export", str(finetuned_run), "--out", str(tmp_path / "bundle"), "--format", "monai-bundle"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither the bundle nor the folder it was built in
