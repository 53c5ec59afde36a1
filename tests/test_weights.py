"""Weights from every public Swin UNETR layout: recognised, the architecture read off them, every encoder
tensor where it belongs (values compared), other channel counts adapted, and bad files named.

No weights can be downloaded here, so each file is built in its project's layout, as its saving code
writes it (key names, wrappers, heads), from a MONAI network with random values."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import SwinUNETR

from conftest import cropped_image
from gmim.errors import InputError
from gmim.swin.weights import WeightReport, adapt_input_channels, load_weights, read_weights

F = 12


def _swin(in_channels: int = 1, out_channels: int = 2, feature_size: int = F, seed: int = 0, **kwargs) -> SwinUNETR:
    torch.manual_seed(seed)
    return SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size, **kwargs)


def _heads(*shapes: tuple[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {name: torch.randn(shape) for name, shape in shapes}


def _without(state: dict[str, torch.Tensor], *prefixes: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}


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
    assert len(report.matched) == len(trained.swinViT.state_dict()) and not report.unexpected and not report.mismatched
    assert_loaded(network, fresh, source, report)
    assert "missing (left as initialised)" in str(report)

    torch.save(source, tmp_path / "model.pt")  # a bundle's models/model.pt: the network's state_dict
    weights, fresh, report = _load(tmp_path / "model.pt", network := _swin(out_channels=14))
    assert weights.layout.startswith("MONAI Swin UNETR") and weights.architecture.out_channels == 14
    assert not report.missing and not report.mismatched and not report.unexpected
    assert_loaded(network, fresh, source, report)

    torch.save({"epoch": 5000, "best_acc": 0.8, "state_dict": source}, tmp_path / "btcv.pt")  # research-contributions
    weights, fresh, report = _load(tmp_path / "btcv.pt", network := _swin(out_channels=3))
    assert [k for k, _, _ in report.mismatched] == ["out.conv.conv.weight", "out.conv.conv.bias"]
    assert_loaded(network, fresh, source, report)


def test_monai_self_supervised_model_swinvit(tmp_path):
    trained = _swin(seed=2)
    state = {f"module.{k}".replace(".mlp.linear", ".mlp.fc"): v for k, v in trained.swinViT.state_dict().items()}
    heads = _heads(
        ("module.norm.weight", (16 * F,)),
        ("module.norm.bias", (16 * F,)),
        ("module.rotation_head.weight", (4, 16 * F)),
        ("module.contrastive_head.weight", (512, 16 * F)),
        ("module.convTrans3d.weight", (16 * F, 1, 4, 4, 4)),
    )
    torch.save({"state_dict": state | heads}, tmp_path / "model_swinvit.pt")
    weights, fresh, report = _load(tmp_path / "model_swinvit.pt", network := _swin())
    assert weights.layout == "MONAI self-supervised (model_swinvit.pt)"
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
    source = _without(trained.state_dict(), "decoder", "out.")
    torch.save(source, tmp_path / "VoCo_SSL_head.pt")
    weights = read_weights(tmp_path / "VoCo_SSL_head.pt")
    found = weights.architecture
    assert weights.layout == "VoCo (Swin UNETR v2 encoder)"
    assert (found.feature_size, found.use_v2, found.depths, found.num_heads) == (feature_size, True, (2, 2, 2, 2), (3, 6, 12, 24))
    network = _swin(feature_size=found.feature_size, use_v2=found.use_v2, out_channels=3)
    fresh = {k: v.clone() for k, v in network.state_dict().items()}
    report = load_weights(network, weights)
    assert all(k.startswith(("decoder", "out.")) for k in report.missing)
    assert_loaded(network, fresh, source, report)


def test_voco_training_layout(tmp_path):
    trained = _swin(use_v2=True, seed=4)
    backbone = {f"backbone.{k}": v for k, v in _without(trained.state_dict(), "decoder", "out.").items()}
    heads = _heads(("student.head.0.weight", (1024, 24 * F)), ("teacher.head.0.weight", (1024, 24 * F)))
    torch.save(backbone | heads, tmp_path / "final_model.pt")
    weights, fresh, report = _load(tmp_path / "final_model.pt", network := _swin(use_v2=True))
    assert weights.layout == "VoCo (training)" and sorted(report.unexpected) == sorted(heads)
    assert_loaded(network, fresh, trained.state_dict(), report)


def test_suprem(tmp_path):
    """supervised_suprem_swinunetr_2100.pth: ``net`` of a DDP Universal_model, the Swin UNETR as
    ``module.backbone.`` without its ``out`` layer, and the CLIP-driven heads beside it."""
    trained = _swin(seed=5)
    backbone = {f"module.backbone.{k}": v for k, v in _without(trained.state_dict(), "out.").items()}
    heads = _heads(
        ("module.organ_embedding", (32, 512)),
        ("module.precls_conv.2.weight", (8, F, 1, 1, 1)),
        ("module.GAP.3.weight", (256, 16 * F, 1, 1, 1)),
        ("module.controller.weight", (153, 512, 1, 1, 1)),
        ("module.text_to_vision.weight", (256, 512)),
    )
    torch.save({"net": heads | backbone, "epoch": 2100}, tmp_path / "supervised_suprem_swinunetr_2100.pth")
    weights, fresh, report = _load(tmp_path / "supervised_suprem_swinunetr_2100.pth", network := _swin(out_channels=4))
    assert weights.layout == "SuPreM" and weights.architecture.out_channels is None
    assert report.missing == ["out.conv.conv.weight", "out.conv.conv.bias"] and sorted(report.unexpected) == sorted(heads)
    assert_loaded(network, fresh, trained.state_dict(), report)


def test_brainsegfounder_with_its_depths_and_channels(tmp_path):
    """BrainSegFounder's SSL checkpoint: ``module.swinViT.`` of 2 (T1, T2) or 4 (BraTS) channels, with
    rotation, contrastive and decoder heads; its scripts also pre-train deeper third stages."""
    trained = _swin(in_channels=2, depths=(2, 2, 6, 2), seed=6)
    state = {f"module.swinViT.{k}": v for k, v in trained.swinViT.state_dict().items()}
    heads = _heads(
        ("module.rotation_head.weight", (4, 16 * F)),
        ("module.contrastive_head.weight", (512, 16 * F)),
        ("module.conv.0.weight", (8 * F, 16 * F, 3, 3, 3)),
        ("module.conv.20.weight", (2, F, 1, 1, 1)),
    )
    torch.save({"global_step": 10, "epoch": 1, "state_dict": state | heads, "optimizer": {}}, tmp_path / "model_bestValRMSE.pt")
    weights = read_weights(tmp_path / "model_bestValRMSE.pt")
    assert weights.layout == "BrainSegFounder (self-supervised)"
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
    resenc = _heads(("encoder.stem.convs.0.conv.weight", (32, 1, 3, 3, 3)), ("rotation_proj_head.weight", (4, 320)))
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
