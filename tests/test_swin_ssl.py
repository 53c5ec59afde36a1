"""Swin UNETR's self-supervised pre-training (gmim.swinssl): heads, losses and views against plain
references written from the published code's description (Tang et al., CVPR 2022; docs/swin-ssl.md),
on identical tensors and identical random draws; then pre-training end to end on real brain crops,
an exact resume, ``encoder.pt`` in MONAI's Swin UNETR, and representation health."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import SwinUNETR
from torch import nn

from conftest import crop
from gmim.cli import main
from gmim.config import load_config
from gmim.errors import InputError
from gmim.swin.weights import read_weights
from gmim.swinssl.config import InpaintingConfig, LossConfig, ModelConfig, SwinSSLConfig
from gmim.swinssl.losses import SwinSSLLoss
from gmim.swinssl.method import pretrain
from gmim.swinssl.model import SSLOutput, build_model
from gmim.swinssl.views import Views, corrupt, make_views, rotate

# -- references: the published model, losses and augmentations, as plain code -------------------


class PublishedHeads(nn.Module):
    """The published SSL head's layers at final-stage width ``dim`` (16F; 768 in the published code)."""

    def __init__(self, dim: int, in_channels: int, upsample: str) -> None:
        super().__init__()
        self.rotation_head = nn.Linear(dim, 4)
        self.contrastive_head = nn.Linear(dim, 512)
        if upsample == "large_kernel_deconv":
            self.conv = nn.ConvTranspose3d(dim, in_channels, kernel_size=(32, 32, 32), stride=(32, 32, 32))
        elif upsample == "deconv":
            widths = [dim, dim // 2, dim // 4, dim // 8, dim // 16, in_channels]
            self.conv = nn.Sequential(
                *[nn.ConvTranspose3d(widths[i], widths[i + 1], kernel_size=(2, 2, 2), stride=(2, 2, 2)) for i in range(5)]
            )
        else:
            layers = []
            widths = [dim, dim // 2, dim // 4, dim // 8, dim // 16, dim // 16]
            for i in range(5):
                layers += [
                    nn.Conv3d(widths[i], widths[i + 1], kernel_size=3, stride=1, padding=1),
                    nn.InstanceNorm3d(widths[i + 1]),
                    nn.LeakyReLU(),
                    nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
                ]
            layers.append(nn.Conv3d(dim // 16, in_channels, kernel_size=1, stride=1))
            self.conv = nn.Sequential(*layers)

    def forward(self, x_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The published forward after the encoder: token 0 → rotation, token 1 → contrastive, the
        whole final stage → reconstruction."""
        _, c, h, w, d = x_out.shape
        tokens = x_out.flatten(start_dim=2, end_dim=4).transpose(1, 2)
        return self.rotation_head(tokens[:, 0]), self.contrastive_head(tokens[:, 1]), self.conv(x_out.flatten(2).view(-1, c, h, w, d))


def published_contrast(x_i, x_j, temperature=0.5):
    """NT-Xent as published: cosine similarities of all 2B projections, the diagonal left out of the denominator."""
    batch = x_i.shape[0]
    z = torch.cat([F.normalize(x_i, dim=1), F.normalize(x_j, dim=1)], dim=0)
    sim = F.cosine_similarity(z.unsqueeze(1), z.unsqueeze(0), dim=2)
    pos = torch.cat([torch.diag(sim, batch), torch.diag(sim, -batch)], dim=0)
    negatives = (~torch.eye(2 * batch, dtype=torch.bool)).float()
    denominator = torch.sum(negatives * torch.exp(sim / temperature), dim=1)
    return torch.sum(-torch.log(torch.exp(pos / temperature) / denominator)) / (2 * batch)


def published_rot_rand(x_s, orientations):
    """The published rotation: each sample (C, H, W, D) turned ``orientation`` quarter turns in dims (2, 3)."""
    x_aug = x_s.detach().clone()
    for i, orientation in enumerate(orientations):
        x_aug[i] = x_s[i].rot90(orientation, (2, 3)) if orientation else x_s[i]
    return x_aug, torch.tensor(orientations).long()


def published_patch_rand_drop(x, rng, generator, x_rep=None, max_drop=0.3, max_block_sz=0.25, tolr=0.05):
    """The published drop of one sample (C, H, W, Z) in place, its global random draws taken from ``rng``
    (``randint`` → ``integers``) and its noise from ``generator``."""
    c, h, w, z = x.size()
    n_drop_pix = rng.uniform(0, max_drop) * h * w * z
    mx_blk_height, mx_blk_width, mx_blk_slices = int(h * max_block_sz), int(w * max_block_sz), int(z * max_block_sz)
    tolr = (int(tolr * h), int(tolr * w), int(tolr * z))
    total_pix = 0
    while total_pix < n_drop_pix:
        rnd_r = rng.integers(0, h - tolr[0])
        rnd_c = rng.integers(0, w - tolr[1])
        rnd_s = rng.integers(0, z - tolr[2])
        rnd_h = min(rng.integers(tolr[0], mx_blk_height) + rnd_r, h)
        rnd_w = min(rng.integers(tolr[1], mx_blk_width) + rnd_c, w)
        rnd_z = min(rng.integers(tolr[2], mx_blk_slices) + rnd_s, z)
        if x_rep is None:
            noise = torch.empty((c, rnd_h - rnd_r, rnd_w - rnd_c, rnd_z - rnd_s), dtype=x.dtype).normal_(generator=generator)
            x[:, rnd_r:rnd_h, rnd_c:rnd_w, rnd_s:rnd_z] = (noise - torch.min(noise)) / (torch.max(noise) - torch.min(noise))
        else:
            x[:, rnd_r:rnd_h, rnd_c:rnd_w, rnd_s:rnd_z] = x_rep[:, rnd_r:rnd_h, rnd_c:rnd_w, rnd_s:rnd_z]
        total_pix = total_pix + (rnd_h - rnd_r) * (rnd_w - rnd_c) * (rnd_z - rnd_s)
    return x


def published_aug_rand(samples, rngs, generators):
    """The published batch drop: noise in each sample, then regions of a random sample of the batch."""
    img_n = samples.size()[0]
    x_aug = samples.detach().clone()
    for i in range(img_n):
        x_aug[i] = published_patch_rand_drop(x_aug[i], rngs[i], generators[i])
        idx_rnd = rngs[i].integers(0, img_n)
        if idx_rnd != i:
            x_aug[i] = published_patch_rand_drop(x_aug[i], rngs[i], generators[i], x_aug[idx_rnd])
    return x_aug


def _draws(count: int, seed: int) -> tuple[list[np.random.Generator], list[torch.Generator]]:
    return [np.random.default_rng(seed + i) for i in range(count)], [torch.Generator().manual_seed(seed + i) for i in range(count)]


# -- heads, losses, views ------------------------------------------------------------------------


def _model_config(**changes) -> ModelConfig:
    return ModelConfig(feature_size=12, roi=(64, 32, 32), in_channels=1, **changes)


@pytest.mark.parametrize("upsample", ["vae", "deconv", "large_kernel_deconv"])
def test_heads_are_the_published_ones(upsample, mni_t1):
    """The published heads hold exactly our heads' tensors (the same names but ``conv``, the same
    shapes) and give our outputs from the encoder's final stage on a real crop, to the bit; the
    encoder is MONAI's ``SwinUNETR(...).swinViT`` (strict load), with fused attention (float round-off)."""
    torch.manual_seed(0)
    model = build_model(_model_config(upsample=upsample)).eval()
    reference = PublishedHeads(16 * 12, 1, upsample).eval()
    heads = {k.replace("reconstruction_head.", "conv."): v for k, v in model.state_dict().items() if not k.startswith("encoder.")}
    reference.load_state_dict(heads, strict=True)
    encoder = SwinUNETR(in_channels=1, out_channels=2, feature_size=12).swinViT.eval()
    encoder.load_state_dict(model.encoder.state_dict(), strict=True)
    x = crop(mni_t1, (60, 80, 60), (64, 32, 32))[None, None] / 100
    with torch.no_grad():
        ours = model(x)
        final = model.encoder(x)[4]
        rotation, contrastive, reconstruction = reference(final)
        torch.testing.assert_close(final, encoder(x)[4], rtol=1e-4, atol=1e-5)
    assert ours.reconstruction.shape == x.shape and ours.contrastive.shape == (1, 512) and ours.rotation.shape == (1, 4)
    for mine, theirs in [(ours.rotation, rotation), (ours.contrastive, contrastive), (ours.reconstruction, reconstruction)]:
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-6)


def test_losses_are_the_published_ones():
    """Rotation cross-entropy, NT-Xent at τ 0.5 and L1 as published, on the same tensors; the total
    with weights 1."""
    generator = torch.Generator().manual_seed(0)
    b = 3
    output = SSLOutput(
        torch.randn(2 * b, 4, generator=generator),
        torch.randn(2 * b, 512, generator=generator),
        torch.rand(2 * b, 1, 64, 32, 32, generator=generator),
    )
    views = Views(
        torch.rand(2 * b, 1, 64, 32, 32),
        torch.rand(2 * b, 1, 64, 32, 32, generator=generator),
        torch.randint(0, 4, (2 * b,), generator=generator),
    )
    terms = SwinSSLLoss(LossConfig())(output, views)
    rotation = nn.CrossEntropyLoss()(output.rotation, views.turns)
    contrastive = published_contrast(output.contrastive[:b], output.contrastive[b:])
    reconstruction = nn.L1Loss()(output.reconstruction, views.targets)
    torch.testing.assert_close(terms["rotation"], rotation, rtol=0, atol=1e-6)
    torch.testing.assert_close(terms["contrastive"], contrastive, rtol=0, atol=1e-6)
    torch.testing.assert_close(terms["reconstruction"], reconstruction, rtol=0, atol=1e-7)
    torch.testing.assert_close(terms["loss"], rotation + contrastive + reconstruction, rtol=0, atol=1e-5)
    weighted = SwinSSLLoss(LossConfig(rotation=0.5, contrastive=2.0, reconstruction=0.0, temperature=0.1))(output, views)
    torch.testing.assert_close(
        weighted["loss"], 0.5 * rotation + 2 * published_contrast(output.contrastive[:b], output.contrastive[b:], 0.1), rtol=0, atol=1e-5
    )


def test_views_are_the_published_rotation_and_drop_with_the_same_draws(mni_t1):
    """Our drop is the published one, draw for draw, on real crops (sample-by-sample in place, the
    copy from a crop already dropped when it comes earlier); make_views is the published rot_rand
    then aug_rand of each view with each crop's generators seeded by (seed, step, volume, crop, view)."""
    x = torch.stack([crop(mni_t1, (50 + 10 * i, 60, 50), (64, 32, 32))[None] / 100 for i in range(4)])
    ours = corrupt(x, *_draws(4, 7), InpaintingConfig())
    theirs = published_aug_rand(x, *_draws(4, 7))
    assert torch.equal(ours, theirs) and not torch.equal(ours, x)
    dropped = (ours != x).float().mean().item()
    assert 0 < dropped < 0.6, dropped

    from gmim.engine.sampling import derived_seed

    keys = [(5, 2, 0), (5, 2, 1), (5, 0, 0), (5, 0, 1)]
    views = make_views(x, keys, seed=3, config=InpaintingConfig())
    for view in (1, 2):
        seeds = [derived_seed(3, *key, view) for key in keys]
        rngs, generators = [np.random.default_rng(s) for s in seeds], [torch.Generator().manual_seed(s) for s in seeds]
        turned, turns = published_rot_rand(x, [int(r.integers(0, 4)) for r in rngs])
        part = slice((view - 1) * 4, view * 4)
        assert torch.equal(views.targets[part], turned) and torch.equal(views.turns[part], turns)
        assert torch.equal(views.inputs[part], published_aug_rand(turned, rngs, generators))
    again = make_views(x[[2, 3, 0, 1]], [keys[i] for i in (2, 3, 0, 1)], seed=3, config=InpaintingConfig())
    assert torch.equal(again.targets[:2], views.targets[2:4])  # a crop's turn is its own, not its place's


def test_rotation_labels_on_a_real_crop(mni_t1):
    """Each label is the number of quarter turns: turning back by it restores the crop, and the four
    turns of a real crop differ from each other."""
    x = crop(mni_t1, (60, 80, 60), (64, 32, 32))[None, None]
    turned = [rotate(x, [k]) for k in range(4)]
    for k, view in enumerate(turned):
        assert torch.equal(torch.rot90(view, -k, (3, 4)), x)
        assert all(not torch.equal(view, other) for other in turned[k + 1 :])
    torch.testing.assert_close(turned[1][0, 0, :, 0, :], x[0, 0, :, :, -1])  # a quarter turn takes the last plane of W to the first of H
    views = make_views(x.repeat(6, 1, 1, 1, 1), [(1, i, 0) for i in range(6)], seed=0, config=InpaintingConfig())
    for view, k in zip(views.targets, views.turns.tolist()):
        assert torch.equal(view[None], turned[k])


def test_config_refuses_a_crop_the_rotation_cannot_turn():
    with pytest.raises(InputError, match="model.roi.*equal last two sizes"):
        load_config(SwinSSLConfig, overrides=["model.roi=[64, 64, 32]"])
    with pytest.raises(InputError, match="inpainting.min_block"):
        load_config(SwinSSLConfig, overrides=["inpainting.min_block=0.3"])


# -- end to end ----------------------------------------------------------------------------------

SMALL = [
    "model.roi=[64, 32, 32]",
    "model.feature_size=12",
    "train.batch_size=1",  # a volume a step, in two crops (data.crops_per_volume 2, as published) of two views each
    "train.workers=0",
    "train.device=cpu",
    "train.warmup_steps=1",
    "train.mixed_precision=false",
    "train.log_every=1",
    "train.validate_every=0",
    "data.validation_volumes=1",
]


@pytest.fixture(scope="module")
def brains(tmp_path_factory, mni_t1, itk_t1) -> Path:
    """Three small real brain volumes: an ICBM152 T1 crop and two ITK example T1 crops (the last, held out)."""
    folder = tmp_path_factory.mktemp("ssl_brains")
    for name, volume in [
        ("a_icbm", mni_t1[40:150:2, 50:170:2, 30:140:2]),
        ("b_itk", itk_t1[10:110, 10:110, 5:55]),
        ("c_itk", itk_t1[20:120, 15:115, 10:60]),
    ]:
        nib.save(nib.Nifti1Image(volume.astype(np.float32), np.diag([1.5, 1.5, 1.5, 1.0])), folder / f"{name}.nii.gz")
    return folder


def _config(*overrides: str) -> SwinSSLConfig:
    return load_config(SwinSSLConfig, "cpu-small", [*SMALL, *overrides], presets="swin-ssl")


@pytest.fixture(scope="module")
def straight_run(brains, tmp_path_factory) -> Path:
    """Two steps through the command line: ``gmim pretrain --method swin-ssl``."""
    out = tmp_path_factory.mktemp("ssl") / "straight"
    settings = [item for setting in [*SMALL, "train.steps=2"] for item in ("--set", setting)]
    assert main(["pretrain", str(brains), "--method", "swin-ssl", "--out", str(out), "--config", "cpu-small", *settings]) == 0
    return out


@pytest.mark.slow
def test_run_writes_its_outputs_and_the_encoder_loads_into_swin_unetr(straight_run):
    out = straight_run
    for name in ("config.yaml", "encoder.pt", "last.pt", "metrics.jsonl", "summary.json", "run.json"):
        assert (out / name).is_file(), name
    assert load_config(SwinSSLConfig, out / "config.yaml").method == "swin-ssl"
    encoder = SwinUNETR(in_channels=1, out_channels=2, feature_size=12).swinViT
    encoder.load_state_dict(torch.load(out / "encoder.pt", weights_only=True), strict=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in train] == [1, 2]
    assert all(np.isfinite(r[f"train/{k}"]) for r in train for k in ("rotation", "contrastive", "reconstruction", "rotation_accuracy"))
    validations = [r for r in records if "val/health/variation4" in r]
    assert [r["step"] for r in validations] == [0, 2] and all("val/loss" in r and "val/contrastive" in r for r in validations)
    health = json.loads((out / "summary.json").read_text())["health"]
    assert len(health["initial"]["variation"]) == 5 and 0 < health["final"]["variation"][-1] <= 1
    assert health["initial"]["correlation_rank"] is None and health["collapsed"] is False
    assert json.loads((out / "run.json").read_text())["method"] == "swin-ssl"


@pytest.mark.slow
def test_export_names_the_method_and_finetune_reads_the_encoder(straight_run, tmp_path):
    """The registry carries the method through: ``gmim export`` writes its card, and the exported
    encoder starts a fine-tuning like GMIM's."""
    assert main(["export", str(straight_run), "--out", str(tmp_path / "exported")]) == 0
    exported = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert exported["gmim"]["method"] == "swin-ssl" and exported["kind"] == "encoder"
    card = (tmp_path / "exported" / "README.md").read_text()
    assert "# Swin UNETR encoder pre-trained with swin-ssl" in card and "`gmim pretrain --method swin-ssl`" in card
    assert "L_rot" in card and "NT-Xent at temperature 0.5" in card
    weights = read_weights(tmp_path / "exported")
    assert weights.merging.reason == "record" and weights.architecture.feature_size == 12


@pytest.mark.slow
def test_stopped_then_resumed_run_continues_exactly(brains, straight_run, tmp_path):
    """Stopped after step 1 (train.stop_after) and resumed: the weights of 2 steps straight, bit for bit."""
    out = tmp_path / "split"
    assert not pretrain(_config("train.steps=2", "train.stop_after=1"), [brains], out).completed
    assert pretrain(_config("train.steps=2"), [brains], out, resume=True).completed
    straight = torch.load(straight_run / "last.pt", weights_only=True)
    resumed = torch.load(out / "last.pt", weights_only=True)
    assert straight["step"] == resumed["step"] == 2
    for key, value in straight["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, msg=key)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["health"]["initial"]["variation"] == [records[0][f"val/health/variation{i}"] for i in range(5)]
