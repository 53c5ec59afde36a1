"""Weights from a gmim encoder.pt, the Swin UNETR self-supervised layout, full checkpoints; the report."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import SwinUNETR

from gmim.errors import InputError
from gmim.swin.weights import load_pretrained, read_state_dict


def _swin(in_channels: int = 1, out_channels: int = 2, feature_size: int = 12, seed: int = 0) -> SwinUNETR:
    torch.manual_seed(seed)
    return SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size)


@pytest.fixture(scope="module")
def encoder():
    return _swin(seed=1).swinViT.state_dict()


def test_gmim_encoder_into_swin_unetr_and_into_encoder(tmp_path, encoder):
    torch.save(encoder, tmp_path / "encoder.pt")
    model = _swin()
    report = load_pretrained(model, tmp_path / "encoder.pt")
    assert len(report.matched) == len(encoder) and not report.unexpected and not report.mismatched
    assert report.missing and all(not k.startswith("swinViT.") for k in report.missing)
    assert all(torch.equal(model.swinViT.state_dict()[k], v) for k, v in encoder.items())
    assert "missing (left as initialised)" in str(report) and f"{len(encoder)} of" in str(report)

    target = _swin().swinViT
    report = load_pretrained(target, tmp_path / "encoder.pt")
    assert not report.missing and len(report.matched) == len(encoder)


def test_self_supervised_swinvit_layout_matches_monai_load_from(tmp_path, encoder):
    state = {f"module.{k}".replace(".mlp.linear", ".mlp.fc"): v for k, v in encoder.items()}
    state |= {"module.rotation_head.weight": torch.zeros(4, 12 * 16), "module.contrastive_head.weight": torch.zeros(512, 12 * 16)}
    torch.save({"epoch": 100, "state_dict": state}, tmp_path / "model_swinvit.pt")
    ours = _swin()
    report = load_pretrained(ours, tmp_path / "model_swinvit.pt")
    assert sorted(report.unexpected) == ["module.contrastive_head.weight", "module.rotation_head.weight"]
    monai = _swin()
    monai.load_from(torch.load(tmp_path / "model_swinvit.pt", weights_only=True))
    assert all(torch.equal(v, ours.swinViT.state_dict()[k]) for k, v in monai.swinViT.state_dict().items())

    brats = _swin(in_channels=4)
    with pytest.warns(UserWarning, match="input channels differ"):
        report = load_pretrained(brats, tmp_path / "model_swinvit.pt")
    assert [k for k, _, _ in report.mismatched] == ["swinViT.patch_embed.proj.weight"]
    assert report.mismatched[0][1:] == ((12, 1, 2, 2, 2), (12, 4, 2, 2, 2))
    assert torch.equal(brats.swinViT.layers4[0].blocks[1].mlp.linear2.weight, encoder["layers4.0.blocks.1.mlp.linear2.weight"])


def test_full_checkpoint_other_classes_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    trained = _swin(seed=2)
    torch.save({"model": trained.state_dict(), "step": 10}, tmp_path / "best.pt")
    model = _swin(out_channels=3)
    with pytest.warns(UserWarning, match="they start from scratch"):
        report = load_pretrained(model, tmp_path / "best.pt")
    assert sorted(k for k, _, _ in report.mismatched) == ["out.conv.conv.bias", "out.conv.conv.weight"]
    assert not report.missing and torch.equal(model.decoder1.conv_block.conv1.conv.weight, trained.decoder1.conv_block.conv1.conv.weight)

    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, tmp_path / "model.safetensors")
    assert read_state_dict(tmp_path / "model.safetensors").keys() == trained.state_dict().keys()
    report = load_pretrained(_swin(), tmp_path / "model.safetensors")
    assert not report.missing and not report.mismatched and report.as_dict()["shape_mismatched"] == []


def test_nothing_matching_is_an_error(tmp_path):
    torch.save(_swin(feature_size=24).swinViT.state_dict(), tmp_path / "f24.pt")
    with pytest.raises(InputError, match=r"f24.pt: 110 tensors have other shapes .* another --feature-size"):
        load_pretrained(_swin(), tmp_path / "f24.pt")
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="other.pt: no weights match a SwinUNETR"):
        load_pretrained(_swin(), tmp_path / "other.pt")
    torch.save({"optimizer": {"lr": 1}}, tmp_path / "none.pt")
    with pytest.raises(InputError, match="holds no weight tensors"):
        load_pretrained(_swin(), tmp_path / "none.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(InputError, match="bad.safetensors: not a readable safetensors"):
        read_state_dict(tmp_path / "bad.safetensors")
