"""Weights saved by MONAI < 1.5 compute in gmim what they computed there.

``fixtures/monai14`` holds what MONAI 1.4 itself computed (its ``make_fixtures.py``, run under MONAI
1.4): a feature-size-12 Swin UNETR and a v2 encoder on a crop of the ITK T1, their encoder hidden
states and the network's logits. Each public layout is written from the same weights, and what gmim
builds from it, by default, reproduces MONAI 1.4 within 1e-5: through the weight reader, through
``gmim finetune --pretrained`` and ``gmim predict`` (here), and through ``gmim pretrain --init``
(``test_pretrain.py``, the run from MONAI's self-supervised layout)."""

from __future__ import annotations

import json

import pytest
import torch
from monai.networks.nets import SwinUNETR

from conftest import SMALL_FINETUNE
from gmim.cli import main
from gmim.config import load_config
from gmim.segmentation.config import FinetuneConfig, ModelConfig
from gmim.segmentation.inference import Predictor
from gmim.segmentation.network import build_network
from gmim.swin.merging import LEGACY
from gmim.swin.weights import load_weights, read_weights
from monai14 import CROP, EXPECTED, TOLERANCE, assert_hidden_states, monai14_state, write_layout
from swin_layouts import PUBLIC_LAYOUTS


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_the_fixtures_tell_the_mergings_apart():
    """Under MONAI >= 1.5's merging the same weights compute another function from stage 1 on."""
    network = SwinUNETR(in_channels=1, out_channels=2, feature_size=12).eval()
    network.load_state_dict(monai14_state("v1"))
    with torch.no_grad():
        hidden = network.swinViT(CROP)
    differences = [relative_difference(h, torch.from_numpy(EXPECTED[f"v1_hidden{stage}"])) for stage, h in enumerate(hidden)]
    assert differences[0] < 1e-6 and min(differences[1:]) > 0.1, differences


@pytest.mark.parametrize("layout", PUBLIC_LAYOUTS)
def test_each_public_layout_computes_what_monai_1_4_computed(tmp_path, layout):
    path = write_layout(tmp_path, layout)
    weights = read_weights(tmp_path if path.parent.name == "models" else path)  # a bundle by its folder
    assert weights.layout == layout
    assert weights.merging.name == LEGACY and weights.merging.reason == ("record" if "bundle" in layout else "layout")
    model = ModelConfig(in_channels=1, roi=(64, 32, 32))
    assert model.take_architecture(weights.architecture, str(path), weights.merging) == weights.merging
    network = build_network(model, out_channels=2).eval()
    report = load_weights(network, weights)
    use_v2 = PUBLIC_LAYOUTS[layout][2]
    assert_hidden_states(network.swinViT, "v2" if use_v2 else "v1")
    if not report.missing:  # the whole network
        with torch.no_grad():
            torch.testing.assert_close(network(CROP), torch.from_numpy(EXPECTED["v1_logits"]), **TOLERANCE)


@pytest.mark.slow
def test_finetune_and_predict_compute_what_monai_1_4_computed(tmp_path, brain_extraction, capsys):
    """``gmim finetune --pretrained`` of a research-contributions checkpoint builds the legacy merging
    and says why; its run, with the encoder frozen, still holds MONAI 1.4's encoder, and ``gmim
    predict`` builds the network that reproduces MONAI 1.4's hidden states and logits."""
    weights = write_layout(tmp_path, "MONAI research-contributions Swin UNETR (state_dict)")
    out = tmp_path / "run"
    arguments = ["finetune", brain_extraction / "brain.json", "--out", out, "--pretrained", weights, "--freeze-encoder"]
    assert main([str(a) for a in [*arguments, "--steps", "1", "--fold", "all", *SMALL_FINETUNE]]) == 0
    said = capsys.readouterr().out
    assert f"patch merging {LEGACY} (MONAI < 1.5's merging): MONAI research-contributions" in said
    assert "set model.patch_merging=monai (--patch-merging monai)" in said
    assert load_config(FinetuneConfig, out / "config.yaml").model.patch_merging == LEGACY
    report = json.loads((out / "weights_report.json").read_text())
    assert report["patch_merging"]["name"] == LEGACY and report["patch_merging"]["reason"] == "layout"

    predictor = Predictor(out, torch.device("cpu"))
    assert_hidden_states(predictor.network.swinViT, "v1")  # the frozen encoder, as the run saved it
    checkpoint = torch.load(out / "best.pt", weights_only=True)
    checkpoint["model"] = monai14_state("v1")  # the whole network as MONAI 1.4 ran it, in the run's folder
    torch.save(checkpoint, out / "best.pt")
    with torch.no_grad():
        logits = Predictor(out, torch.device("cpu")).network(CROP)
    torch.testing.assert_close(logits, torch.from_numpy(EXPECTED["v1_logits"]), **TOLERANCE)
