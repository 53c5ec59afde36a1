"""Weights from every public Swin UNETR layout: recognised, the architecture read off them, every encoder
tensor where it belongs (values compared), other channel counts adapted, and bad files named.

No weights can be downloaded here, so each file is built in its project's layout, as its saving code
writes it (key names, wrappers, heads), from a MONAI network with random values."""

from __future__ import annotations

import json

import pytest
import torch
from monai.networks.nets import SwinUNETR

import swin_layouts as layouts
from conftest import cropped_image
from gmim.errors import InputError
from gmim.segmentation.config import ModelConfig
from gmim.swin.merging import LEGACY
from gmim.swin.weights import WeightReport, adapt_input_channels, load_weights, read_weights

F = 12


def _swin(in_channels: int = 1, out_channels: int = 2, feature_size: int = F, seed: int = 0, **kwargs) -> SwinUNETR:
    torch.manual_seed(seed)
    return SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size, **kwargs)


def assert_loaded(network: torch.nn.Module, fresh: dict[str, torch.Tensor], source: dict[str, torch.Tensor], report: WeightReport) -> None:
    """Every tensor of ``network`` that the report says matched holds the source's value; every other
    one still holds its fresh value and is listed as missing, adapted or of another shape: a trainable
    parameter left fresh without a word would be a bug."""
    after = network.state_dict()
    prefix = "swinViT." if not any(k.startswith("swinViT.") for k in after) else ""
    listed = set(report.missing) | {k for k, _, _ in report.mismatched} | {k for k, _, _ in report.adapted}
    for name, value in after.items():
        key = prefix + name
        if key in report.matched:
            assert torch.equal(value, source[key]), key
        else:
            assert key in listed, f"{key} neither loaded nor reported"
            if key not in {k for k, _, _ in report.adapted}:
                assert torch.equal(value, fresh[name]), key


def _load(path, network: torch.nn.Module):
    weights = read_weights(path)
    fresh = {k: v.clone() for k, v in network.state_dict().items()}
    report = load_weights(network, weights)
    return weights, fresh, report


def test_gmim_encoder_and_monai_model_zoo_bundle(tmp_path):
    trained = _swin(out_channels=14, seed=1)
    torch.save(trained.swinViT.state_dict(), tmp_path / "encoder.pt")
    source = trained.state_dict()
    network = _swin()
    weights, fresh, report = _load(tmp_path / "encoder.pt", network)
    assert weights.layout == "gmim encoder.pt" and weights.architecture.feature_size == F and weights.architecture.in_channels == 1
    assert (weights.merging.name, weights.merging.reason) == ("monai", "rule")  # a bare encoder says nothing of its source
    assert len(report.matched) == len(trained.swinViT.state_dict()) and not report.unexpected and not report.mismatched
    assert_loaded(network, fresh, source, report)
    assert "missing (left as initialised)" in str(report)

    torch.save(layouts.model_zoo(source), tmp_path / "model.pt")  # a network's state_dict, as a bundle's models/model.pt
    weights, fresh, report = _load(tmp_path / "model.pt", network := _swin(out_channels=14))
    assert weights.layout.startswith("MONAI Swin UNETR") and weights.architecture.out_channels == 14
    assert not report.missing and not report.mismatched and not report.unexpected
    assert_loaded(network, fresh, source, report)
    assert weights.merging.reason == "rule"

    torch.save(layouts.research_contributions(source), tmp_path / "btcv.pt")
    weights, fresh, report = _load(tmp_path / "btcv.pt", network := _swin(out_channels=3))
    assert [k for k, _, _ in report.mismatched] == ["out.conv.conv.weight", "out.conv.conv.bias"]
    assert_loaded(network, fresh, source, report)
    assert (weights.merging.name, weights.merging.reason) == (LEGACY, "layout")  # trained before MONAI 1.5


def test_monai_self_supervised_model_swinvit(tmp_path):
    trained = _swin(seed=2)
    saved = layouts.monai_self_supervised(trained.state_dict())
    heads = [k for k in saved["state_dict"] if not k.startswith(("module.patch_embed", "module.layers"))]
    torch.save(saved, tmp_path / "model_swinvit.pt")
    weights, fresh, report = _load(tmp_path / "model_swinvit.pt", network := _swin())
    assert weights.layout == "MONAI self-supervised (model_swinvit.pt)" and weights.merging.name == LEGACY
    assert sorted(report.unexpected) == sorted(heads)
    assert_loaded(network, fresh, trained.state_dict(), report)
    monai = _swin()
    monai.load_from(torch.load(tmp_path / "model_swinvit.pt", weights_only=True))  # MONAI's own loader agrees
    assert all(torch.equal(v, network.swinViT.state_dict()[k]) for k, v in monai.swinViT.state_dict().items())


@pytest.mark.parametrize("feature_size", [24, 36])
def test_voco_release_builds_its_own_architecture(tmp_path, feature_size):
    """VoCo_{B,L,H}_SSL_head.pt: a flat Swin UNETR v2 encoder with encoder1…4, 10 (F 48, 96, 192; F 24
    and 36 here, which no default gives): the architecture comes from the file."""
    trained = _swin(feature_size=feature_size, use_v2=True, seed=3)
    source = layouts.voco_release(trained.state_dict())
    torch.save(source, tmp_path / "VoCo_SSL_head.pt")
    weights = read_weights(tmp_path / "VoCo_SSL_head.pt")
    found = weights.architecture
    assert weights.layout == "VoCo (Swin UNETR v2 encoder)" and weights.merging.name == LEGACY  # VoCo pins MONAI 1.3
    assert (found.feature_size, found.use_v2, found.depths, found.num_heads) == (feature_size, True, (2, 2, 2, 2), (3, 6, 12, 24))
    network = _swin(feature_size=found.feature_size, use_v2=found.use_v2, out_channels=3)
    fresh = {k: v.clone() for k, v in network.state_dict().items()}
    report = load_weights(network, weights)
    assert all(k.startswith(("decoder", "out.")) for k in report.missing)
    assert_loaded(network, fresh, source, report)


def test_voco_training_layout(tmp_path):
    trained = _swin(use_v2=True, seed=4)
    saved = layouts.voco_training(trained.state_dict())
    heads = [k for k in saved if not k.startswith("backbone.")]
    torch.save(saved, tmp_path / "final_model.pt")
    weights, fresh, report = _load(tmp_path / "final_model.pt", network := _swin(use_v2=True))
    assert weights.layout == "VoCo (training)" and sorted(report.unexpected) == sorted(heads)
    assert_loaded(network, fresh, trained.state_dict(), report)


def test_suprem(tmp_path):
    """supervised_suprem_swinunetr_2100.pth: ``net`` of a DDP Universal_model, the Swin UNETR as
    ``module.backbone.`` without its ``out`` layer, and the CLIP-driven heads beside it."""
    trained = _swin(seed=5)
    saved = layouts.suprem(trained.state_dict())
    heads = [k for k in saved["net"] if not k.startswith("module.backbone.")]
    torch.save(saved, tmp_path / "supervised_suprem_swinunetr_2100.pth")
    weights, fresh, report = _load(tmp_path / "supervised_suprem_swinunetr_2100.pth", network := _swin(out_channels=4))
    assert weights.layout == "SuPreM" and weights.architecture.out_channels is None and weights.merging.name == LEGACY
    assert report.missing == ["out.conv.conv.weight", "out.conv.conv.bias"] and sorted(report.unexpected) == sorted(heads)
    assert_loaded(network, fresh, trained.state_dict(), report)


def test_brainsegfounder_with_its_depths_and_channels(tmp_path):
    """BrainSegFounder's SSL checkpoint: ``module.swinViT.`` of 2 (T1, T2) or 4 (BraTS) channels, with
    rotation, contrastive and decoder heads; its scripts also pre-train deeper third stages."""
    trained = _swin(in_channels=2, depths=(2, 2, 6, 2), seed=6)
    saved = layouts.brainsegfounder(trained.state_dict())
    heads = [k for k in saved["state_dict"] if not k.startswith("module.swinViT.")]
    torch.save(saved, tmp_path / "model_bestValRMSE.pt")
    weights = read_weights(tmp_path / "model_bestValRMSE.pt")
    assert weights.layout == "BrainSegFounder (self-supervised)" and weights.merging.name == LEGACY
    assert (weights.architecture.depths, weights.architecture.in_channels) == ((2, 2, 6, 2), 2)
    network = _swin(in_channels=2, depths=weights.architecture.depths)
    fresh = {k: v.clone() for k, v in network.state_dict().items()}
    report = load_weights(network, weights)
    assert sorted(report.unexpected) == sorted(heads)
    assert_loaded(network, fresh, trained.state_dict(), report)


def test_nnssl_checkpoints(tmp_path):
    """nnssl's public checkpoints are CNNs (its Swin UNETR pretext tasks run on ResEnc-L): refused by
    name. A Swin UNETR saved by its trainer's code (``network_weights`` beside the adaptation plan)
    loads."""
    plan = {
        "architecture_plans": {"arch_class_name": "ResEncL", "arch_kwargs": None},
        "pretrain_num_input_channels": 1,
        "key_to_encoder": "encoder.stages",
        "key_to_stem": "encoder.stem",
        "keys_to_in_proj": ["encoder.stem.convs.0.conv"],
    }
    resenc = layouts.heads(("encoder.stem.convs.0.conv.weight", (32, 1, 3, 3, 3)), ("rotation_proj_head.weight", (4, 320)))
    torch.save(
        {"network_weights": resenc, "nnssl_adaptation_plan": plan, "trainer_name": "SwinUNETRTrainer", "current_epoch": 1000},
        tmp_path / "resenc.pth",
    )
    with pytest.raises(InputError, match=r"resenc.pth: an nnssl checkpoint of a ResEncL network, not a Swin UNETR"):
        read_weights(tmp_path / "resenc.pth")
    trained = _swin(seed=7)
    swin_plan = plan | {"architecture_plans": {"arch_class_name": "SwinUNETR"}, "key_to_encoder": "swinViT"}
    torch.save({"network_weights": trained.state_dict(), "nnssl_adaptation_plan": swin_plan}, tmp_path / "swin.pth")
    weights, fresh, report = _load(tmp_path / "swin.pth", network := _swin())
    assert weights.layout == "nnssl checkpoint" and not report.missing
    assert_loaded(network, fresh, trained.state_dict(), report)


def test_safetensors_and_run_folders(tmp_path):
    from safetensors.torch import save_file

    trained = _swin(seed=8)
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, tmp_path / "model.safetensors")
    weights, fresh, report = _load(tmp_path, network := _swin())  # a folder holding model.safetensors
    assert weights.source.endswith("model.safetensors") and not report.missing and not report.mismatched
    assert_loaded(network, fresh, trained.state_dict(), report)
    (tmp_path / "config.json").write_text('{"gmim": {"patch_merging": "prototype"}}')
    assert read_weights(tmp_path).architecture.patch_merging == "monai-legacy"  # recorded beside the weights (an older name)


def test_the_patch_merging_comes_from_a_record_the_layout_or_the_rule_and_the_user_may_choose(tmp_path):
    """The weights cannot show their merging: a record beside them binds, a layout suggests, and a
    file that says nothing gets MONAI >= 1.5's; the report says which and why."""
    state = _swin(seed=11).state_dict()
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "configs").mkdir()
    torch.save(layouts.model_zoo(state), bundle / "models" / "model.pt")
    for metadata, merging in (({"monai_version": "1.3.2"}, LEGACY), ({"monai_version": "1.5.0"}, "monai")):
        (bundle / "configs" / "metadata.json").write_text(json.dumps(metadata))
        choice = read_weights(bundle).merging  # the bundle's folder, or its models/model.pt
        assert (choice.name, choice.reason) == (merging, "record") and metadata["monai_version"] in choice.why
    (bundle / "configs" / "metadata.json").write_text(json.dumps({"monai_version": "1.6.1", "gmim": {"patch_merging": "prototype"}}))
    assert read_weights(bundle / "models" / "model.pt").merging.name == LEGACY  # gmim's record, under its older name

    run = tmp_path / "run"
    run.mkdir()
    torch.save(layouts.research_contributions(state), run / "model.pt")
    (run / "config.yaml").write_text("model:\n  patch_merging: monai\n")
    weights = read_weights(run / "model.pt")
    assert (weights.merging.name, weights.merging.reason, weights.architecture.patch_merging) == ("monai", "record", "monai")
    with pytest.raises(
        InputError, match=r"model.pt: the weights are a Swin UNETR with patch_merging monai, but model.patch_merging is monai-legacy"
    ):
        ModelConfig(patch_merging="prototype").take_architecture(weights.architecture, str(run / "model.pt"), weights.merging)

    torch.save(layouts.research_contributions(state), tmp_path / "btcv.pt")
    weights = read_weights(tmp_path / "btcv.pt")
    assert weights.architecture.patch_merging is None  # a layout's merging is a default, not a record
    model = ModelConfig(patch_merging="monai")
    choice = model.take_architecture(weights.architecture, "btcv.pt", weights.merging)
    assert choice is not None and (choice.name, choice.reason, model.patch_merging) == ("monai", "setting", "monai")
    assert "otherwise monai-legacy" in choice.why
    model = ModelConfig()
    assert model.take_architecture(weights.architecture, "btcv.pt", weights.merging) == weights.merging and model.patch_merging == LEGACY
    report = load_weights(_swin(), weights)
    report.merging = weights.merging
    assert report.as_dict()["patch_merging"] == {"name": LEGACY, "reason": "layout", "why": weights.merging.why}
    assert "patch merging monai-legacy (MONAI < 1.5's merging): MONAI research-contributions Swin UNETR (state_dict) weights were " in str(
        report
    )
    assert "set model.patch_merging=monai (--patch-merging monai)" in str(report)


def test_another_channel_count_is_adapted_on_a_real_scan(tmp_path, itk_paths):
    """A 1-channel encoder into a 4-channel network: on the ITK T1 repeated in the four channels, the
    adapted network computes what the 1-channel one computes on the T1 alone, at every stage of
    the encoder and in the skip path's input block; and the reverse, 4 → 1."""
    image, _ = cropped_image(itk_paths["t1"], (32, 32, 15), (64, 64, 32))
    t1 = torch.from_numpy(image).float()[None, None]
    t1 = (t1 - t1.mean()) / t1.std()
    one = _swin(seed=9).eval()
    torch.save({"state_dict": one.state_dict()}, tmp_path / "ct.pt")
    four = _swin(in_channels=4).eval()
    weights, fresh, report = _load(tmp_path / "ct.pt", four)
    assert sorted(k for k, _, _ in report.adapted) == sorted(
        ["swinViT.patch_embed.proj.weight", "encoder1.layer.conv1.conv.weight", "encoder1.layer.conv3.conv.weight"]
    )
    assert "adapted to 4 input channel(s) from the file's 1" in str(report) and report.as_dict()["adapted"][0]["file"][1] == 1
    assert_loaded(four, fresh, one.state_dict(), report)
    repeated = t1.repeat(1, 4, 1, 1, 1)
    with torch.no_grad():
        for ours, theirs in zip(four.swinViT(repeated), one.swinViT(t1)):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(four.encoder1(repeated), one.encoder1(t1), rtol=1e-4, atol=1e-5)  # the skip path's input block

    torch.save(four.state_dict(), tmp_path / "brats.pt")
    back = _swin(in_channels=1).eval()
    load_weights(back, read_weights(tmp_path / "brats.pt"))
    with torch.no_grad():
        torch.testing.assert_close(back.swinViT.patch_embed(t1), one.swinViT.patch_embed(t1), rtol=1e-4, atol=1e-5)

    kept = _swin(in_channels=4, seed=10)
    before = kept.swinViT.patch_embed.proj.weight.clone()
    report = load_weights(kept, weights, adapt_channels=False)  # fresh initialisation stays an option
    assert not report.adapted and torch.equal(kept.swinViT.patch_embed.proj.weight, before)
    assert ("swinViT.patch_embed.proj.weight", (F, 1, 2, 2, 2), (F, 4, 2, 2, 2)) in report.mismatched


def test_adaptation_keeps_the_sum_over_channels():
    weight = torch.randn(8, 3, 2, 2, 2)
    for channels in (1, 4):
        adapted = adapt_input_channels(weight, channels)
        assert adapted.shape == (8, channels, 2, 2, 2)
        torch.testing.assert_close(adapted.sum(1), weight.sum(1))


def test_bad_weights_are_named(tmp_path):
    torch.save({"fc.weight": torch.zeros(3, 3), "fc.bias": torch.zeros(3)}, tmp_path / "resnet.pt")
    with pytest.raises(InputError, match=r"resnet.pt: no Swin UNETR encoder in an unknown layout \(top-level keys: fc.weight, fc.bias"):
        read_weights(tmp_path / "resnet.pt")
    torch.save({"optimizer": {"lr": 1}}, tmp_path / "none.pt")
    with pytest.raises(InputError, match=r"none.pt: holds no weight tensors \(top-level keys: optimizer\)"):
        read_weights(tmp_path / "none.pt")
    swin2d = {"swinViT.patch_embed.proj.weight": torch.zeros(F, 3, 2, 2), "swinViT.layers1.0.blocks.0.norm1.weight": torch.zeros(F)}
    torch.save(swin2d, tmp_path / "swin2d.pt")
    with pytest.raises(InputError, match=r"swin2d.pt: a 2D Swin \(patch embedding \(12, 3, 2, 2\)\)"):
        read_weights(tmp_path / "swin2d.pt")
    torch.save(_swin().state_dict(), tmp_path / "whole.pt")
    data = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"truncated.pt: not a readable PyTorch checkpoint"):
        read_weights(tmp_path / "truncated.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(InputError, match="bad.safetensors: not a readable safetensors"):
        read_weights(tmp_path / "bad.safetensors")
    with pytest.raises(InputError, match=r"missing.pt: weights file not found"):
        read_weights(tmp_path / "missing.pt")
    with pytest.raises(InputError, match=r"whole.pt: 142 tensors have other shapes than this SwinUNETR .* a Swin UNETR of F 12, depths"):
        load_weights(_swin(feature_size=24), read_weights(tmp_path / "whole.pt"))
