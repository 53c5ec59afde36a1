"""The masked encoder, the Siamese model and the losses."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from monai.networks.nets import SwinUNETR

from conftest import crop
from gmim.pretraining.encoder import MaskedSwinEncoder
from gmim.pretraining.losses import (
    GMIMLoss,
    align_to_online,
    cross_correlation_loss,
    reconstruction_loss,
)
from gmim.pretraining.masking import GridMaskPlanner, voxel_mask
from gmim.pretraining.model import GMIM
from gmim.swin.attention import FusedWindowAttention, fuse_window_attention

FEATURES = 12


def t1_views(mni_t1, size=(64, 32, 32)) -> tuple[torch.Tensor, torch.Tensor]:
    """Two overlapping views of two places in the ICBM152 T1 (the smallest crop the decoder takes)."""
    x = torch.stack([crop(mni_t1, (60, 70, 50), size), crop(mni_t1, (80, 90, 70), size)])[:, None]
    y = torch.stack([crop(mni_t1, (64, 72, 54), size), crop(mni_t1, (84, 94, 72), size)])[:, None]
    return x, y


def test_encoder_state_dict_is_monai_swinvit_both_ways(mni_t1):
    torch.manual_seed(0)
    ours = MaskedSwinEncoder(in_channels=1, feature_size=FEATURES)
    monai = SwinUNETR(in_channels=1, out_channels=2, feature_size=FEATURES).swinViT
    assert list(ours.state_dict()) == list(monai.state_dict())
    monai.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(monai.state_dict(), strict=True)
    x, _ = t1_views(mni_t1)
    with torch.no_grad():
        for a, b in zip(ours.eval()(x), monai.eval()(x)):
            torch.testing.assert_close(a, b)


def test_masks_act_at_a0_to_a3_and_not_after_layers3(mni_t1):
    torch.manual_seed(0)
    encoder = MaskedSwinEncoder(in_channels=1, feature_size=FEATURES).eval()
    x, _ = t1_views(mni_t1, (64, 64, 64))
    plan = GridMaskPlanner().plan(x)
    masks = plan.hierarchical_masks((64, 64, 64), drop_probability=1.0, generator=torch.Generator().manual_seed(0))
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        getattr(encoder, name)[0].register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(name, args[0]))
        for name in ("layers1", "layers2", "layers3", "layers4")
    ]
    hooks.append(encoder.layers3[0].register_forward_hook(lambda m, args, out: seen.__setitem__("layers3_out", out)))
    with torch.no_grad():
        encoder(x, masks=masks)
    for hook in hooks:
        hook.remove()
    a0_or_a1 = masks[0] | masks[1]
    for name, mask in (("layers1", a0_or_a1), ("layers2", masks[2]), ("layers3", masks[3])):
        tokens = seen[name]
        assert torch.all(tokens.permute(0, 2, 3, 4, 1)[mask] == 0), name
        assert torch.all(tokens.abs().sum(1)[~mask] > 0), name
    torch.testing.assert_close(seen["layers4"], seen["layers3_out"], rtol=0, atol=0)


def test_learned_mask_tokens_fill_masked_positions(mni_t1):
    torch.manual_seed(0)
    model = GMIM(in_channels=1, feature_size=FEATURES, learned_mask_token=True)
    with torch.no_grad():
        for token in model.mask_tokens:
            token.fill_(0.75)
    x, _ = t1_views(mni_t1)
    masks = GridMaskPlanner(grids=(4,)).plan(x).hierarchical_masks(x.shape[2:], generator=torch.Generator().manual_seed(0))
    seen = {}
    model.encoder.layers1[0].register_forward_pre_hook(lambda m, args: seen.__setitem__("in", args[0]))
    with torch.no_grad():
        model.encoder(x, masks=masks, mask_tokens=model.mask_tokens)
    assert torch.all(seen["in"].permute(0, 2, 3, 4, 1)[masks[0]] == 0.75)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_target_branch_gets_no_gradient_and_target_head_does(mni_t1, momentum):
    torch.manual_seed(0)
    model = GMIM(in_channels=1, feature_size=FEATURES, target_momentum=momentum)
    x, y = t1_views(mni_t1)
    masks = GridMaskPlanner().plan(x).hierarchical_masks(x.shape[2:], generator=torch.Generator().manual_seed(0))
    output = model(x, y, masks)
    encoder_params = list(model.encoder.parameters())
    through_target = torch.autograd.grad(output.target.sum(), encoder_params, allow_unused=True, retain_graph=True)
    assert all(g is None for g in through_target)
    losses = GMIMLoss()(output, x, voxel_mask(masks[0]))
    losses["loss"].backward()
    assert model.target_head.weight.grad is not None and model.target_head.weight.grad.abs().sum() > 0
    assert model.online_head.weight.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    if momentum:
        assert all(p.grad is None and not p.requires_grad for p in model.target_encoder.parameters())
        before = [p.clone() for p in model.target_encoder.parameters()]
        with torch.no_grad():
            for p in model.encoder.parameters():
                p.add_(1.0)
        model.update_target()
        for old, new, online in zip(before, model.target_encoder.parameters(), model.encoder.parameters()):
            torch.testing.assert_close(new, momentum * old + (1 - momentum) * online)


def test_output_shapes(mni_t1):
    model = GMIM(in_channels=1, feature_size=FEATURES, projection_dim=64)
    x = torch.rand(1, 1, 64, 64, 32)
    y = torch.rand(1, 1, 64, 64, 32)
    output = model(x, y, [None] * 4)
    assert output.online.shape == output.target.shape == (1, 2 * 2 * 1, 64)
    assert output.reconstruction.shape == x.shape
    with pytest.raises(ValueError, match="one final-stage token"):
        model(x[..., :32, :32, :], y[..., :32, :32, :], [None] * 4)


def direct_cross_correlation(zx: torch.Tensor, zy: torch.Tensor, lam: float) -> torch.Tensor:
    total = 0.0
    for b in range(zx.shape[0]):
        n, p = zx.shape[1:]
        for i, j in itertools.product(range(p), range(p)):
            c = sum(float(zx[b, t, i]) * float(zy[b, t, j]) for t in range(n)) / n
            total += (1 - c) ** 2 if i == j else lam * c**2
    return torch.tensor(total / zx.shape[0])


def test_cross_correlation_against_direct_formula():
    generator = torch.Generator().manual_seed(0)
    zx, zy = torch.randn(2, 5, 4, generator=generator), torch.randn(2, 5, 4, generator=generator)
    torch.testing.assert_close(cross_correlation_loss(zx, zy, 0.005), direct_cross_correlation(zx, zy, 0.005).float())
    standard = lambda z: (z - z.mean(1, keepdim=True)) / z.std(1, correction=0, keepdim=True)  # noqa: E731
    torch.testing.assert_close(
        cross_correlation_loss(zx, zy, 0.1, standardize=True),
        direct_cross_correlation(standard(zx), standard(zy), 0.1).float(),
    )
    same = torch.randn(1, 8, 3, generator=generator)
    assert float(cross_correlation_loss(same, same, 0.0, standardize=True)) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="2 tokens"):
        cross_correlation_loss(zx[:, :1], zy[:, :1], standardize=True)


def test_reconstruction_loss_against_direct_formula():
    generator = torch.Generator().manual_seed(0)
    prediction = torch.randn(2, 2, 4, 4, 4, generator=generator, requires_grad=True)
    target = torch.randn(2, 2, 4, 4, 4, generator=generator)
    mask = torch.rand(2, 1, 4, 4, 4, generator=generator) > 0.5
    errors = [
        sum(float((prediction.detach()[b, c] - target[b, c])[mask[b, 0]].pow(2).sum()) for c in range(2)) / (2 * int(mask[b].sum()))
        for b in range(2)
    ]
    expected = sum(errors) / 2
    loss = reconstruction_loss(prediction, target, mask)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(reconstruction_loss(prediction, target).detach()) == pytest.approx(
        float(((prediction - target) ** 2).mean().detach()), rel=1e-6
    )
    loss.backward()
    assert torch.isfinite(prediction.grad).all()
    assert torch.all(prediction.grad.permute(0, 2, 3, 4, 1)[~mask[:, 0]] == 0)
    empty = reconstruction_loss(prediction, target, torch.zeros_like(mask))
    assert float(empty) == 0.0


def test_prototype_reconstruction_mean_is_over_all_voxels_of_the_batch():
    """The prototype zeroes the visible voxels of prediction and target, then takes MSELoss over all
    B·C·D·H·W voxels: the masked mean times the masked fraction when samples mask alike."""
    generator = torch.Generator().manual_seed(1)
    prediction = torch.randn(2, 2, 4, 4, 4, generator=generator)
    target = torch.randn(2, 2, 4, 4, 4, generator=generator)
    mask = torch.rand(2, 1, 4, 4, 4, generator=generator) > 0.4
    keep = mask.float()
    as_run = torch.nn.MSELoss()(prediction * keep, target * keep)
    torch.testing.assert_close(reconstruction_loss(prediction, target, mask, mean="prototype"), as_run)
    same = mask[:1].expand(2, -1, -1, -1, -1)
    fraction = same.float().mean()
    torch.testing.assert_close(
        reconstruction_loss(prediction, target, same, mean="prototype"), reconstruction_loss(prediction, target, same) * fraction
    )
    with pytest.raises(ValueError, match="mean"):
        reconstruction_loss(prediction, target, mask, mean="sum")


def test_total_loss_weights(mni_t1):
    torch.manual_seed(0)
    model = GMIM(in_channels=1, feature_size=FEATURES)
    x, y = t1_views(mni_t1)
    masks = GridMaskPlanner().plan(x).hierarchical_masks(x.shape[2:], generator=torch.Generator().manual_seed(0))
    output = model(x, y, masks)
    terms = GMIMLoss(alpha_cc=0.01, alpha_rec=2.0)(output, x, voxel_mask(masks[0]))
    torch.testing.assert_close(terms["loss"], 0.01 * terms["cross_correlation"] + 2.0 * terms["reconstruction"])
    all_voxels = GMIMLoss(masked_only=False)(output, x, voxel_mask(masks[0]))["reconstruction"]
    torch.testing.assert_close(all_voxels, ((output.reconstruction - x) ** 2).mean())


def test_bad_model_options_are_refused():
    with pytest.raises(ValueError, match="feature_size"):
        MaskedSwinEncoder(in_channels=1, feature_size=10)
    with pytest.raises(ValueError, match="target_momentum"):
        GMIM(in_channels=1, feature_size=FEATURES, target_momentum=1.0)
    with pytest.raises(ValueError, match="alpha_cc"):
        GMIMLoss(alpha_cc=-1.0)


def test_alignment_puts_target_tokens_at_the_online_places():
    generator = torch.Generator().manual_seed(0)
    token_shape = (3, 2, 2)
    target = torch.randn(2, 12, 5, generator=generator)
    grid = target.transpose(1, 2).reshape(2, 5, *token_shape)
    same, weights = align_to_online(target, token_shape, torch.zeros(2, 3, dtype=torch.int64))
    torch.testing.assert_close(same, target)
    assert weights.all()
    # y starts one token deeper than x: online token (i, j, k) sees target token (i - 1, j, k)
    shifted, weights = align_to_online(target, token_shape, torch.tensor([[32, 0, 0], [0, -16, 0]]))
    first = shifted[0].transpose(0, 1).reshape(5, *token_shape)
    torch.testing.assert_close(first[:, 1:], grid[0, :, :-1])
    assert not weights[0].view(token_shape)[0].any() and weights[0].view(token_shape)[1:].all()
    # half a token the other way along h: the mean of two neighbours, or the edge token at the border
    second = shifted[1].transpose(0, 1).reshape(5, *token_shape)
    torch.testing.assert_close(second[:, :, 0], 0.5 * (grid[1, :, :, 0] + grid[1, :, :, 1]))
    torch.testing.assert_close(second[:, :, 1], grid[1, :, :, 1])
    assert weights[1].all()
    _, weights = align_to_online(target, token_shape, torch.tensor([[0, 0, 17], [0, 40, 0]]))
    assert not weights[0].view(token_shape)[:, :, 0].any() and weights[0].view(token_shape)[:, :, 1].all()
    assert not weights[1].view(token_shape)[:, 0].any() and weights[1].view(token_shape)[:, 1].all()


def test_cross_correlation_over_some_tokens_is_the_formula_on_those_tokens():
    generator = torch.Generator().manual_seed(1)
    zx, zy = torch.randn(2, 6, 3, generator=generator), torch.randn(2, 6, 3, generator=generator)
    weights = torch.tensor([[1, 1, 0, 1, 0, 1], [0, 0, 0, 0, 0, 0]], dtype=torch.float32)
    keep = weights[0].bool()
    for standardize in (False, True):
        expected = cross_correlation_loss(zx[:1, keep], zy[:1, keep], 0.01, standardize)
        torch.testing.assert_close(cross_correlation_loss(zx, zy, 0.01, standardize, weights), expected)


def test_aligned_loss_needs_the_offset(mni_t1):
    torch.manual_seed(0)
    model = GMIM(in_channels=1, feature_size=FEATURES)
    x, y = t1_views(mni_t1)
    output = model(x, y, [None] * 4)
    loss = GMIMLoss(align_overlap=True)
    terms = loss(output, x, None, torch.tensor([[32, 0, 0], [-8, 4, 0]]))
    assert torch.isfinite(terms["loss"])
    with pytest.raises(ValueError, match="offset"):
        loss(output, x, None)


@pytest.mark.slow
def test_fused_window_attention_is_monai_attention_forward_and_backward(mni_t1):
    """SDPA window attention, shifted windows' mask included, computes MONAI's function: the same
    outputs and gradients to round-off (float64), with the state_dict unchanged."""
    torch.manual_seed(0)
    reference = SwinUNETR(in_channels=1, out_channels=2, feature_size=FEATURES).double()
    fused = fuse_window_attention(copy.deepcopy(reference))
    assert sum(isinstance(m, FusedWindowAttention) for m in fused.modules()) == 8
    SwinUNETR(in_channels=1, out_channels=2, feature_size=FEATURES).load_state_dict(fused.state_dict(), strict=True)
    x = torch.stack([crop(mni_t1, (60, 70, 50), (64, 32, 32)), crop(mni_t1, (80, 90, 70), (64, 32, 32))])[:, None].double() / 100
    # the encoder, where every window attention is (the decoder's convolutions in float64 would take
    # most of the time and are the same modules in both): its five stages' outputs and gradients
    outputs = [network.swinViT(x) for network in (reference, fused)]
    for stage, (a, b) in enumerate(zip(*outputs)):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10, msg=f"stage {stage}")
    for output in outputs:
        sum(state.square().mean() for state in output).backward()
    for (name, a), b in zip(reference.swinViT.named_parameters(), fused.swinViT.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-8, atol=1e-12 * float(a.grad.abs().max()), msg=name)


def test_models_use_fused_attention_unless_told_not_to():
    from gmim.config import load_config
    from gmim.pretraining.config import PretrainConfig
    from gmim.pretraining.method import build_model
    from gmim.segmentation.config import ModelConfig
    from gmim.segmentation.network import build_network

    for fused in (True, False):
        config = load_config(
            PretrainConfig, None, [f"model.feature_size={FEATURES}", "model.in_channels=1", f"model.fused_attention={str(fused).lower()}"]
        )
        segmentation = build_network(ModelConfig(feature_size=FEATURES, roi=(64, 64, 32), in_channels=1, fused_attention=fused), 2)
        for network in (build_model(config), segmentation):
            assert any(isinstance(m, FusedWindowAttention) for m in network.modules()) == fused
