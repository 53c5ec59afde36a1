"""Representation health: the trivial value of L_cc, token variation, effective rank, rank of C."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import crop
from gmim.pretraining.encoder import MaskedSwinEncoder
from gmim.pretraining.health import (
    Health,
    HealthMeter,
    collapse_warning,
    correlation_rank,
    trivial_cross_correlation,
)
from gmim.pretraining.losses import cross_correlation_loss, variance_loss


def test_trivial_value_is_the_minimum_over_constant_projections():
    assert trivial_cross_correlation(512, 0.005) == pytest.approx(368.0, abs=0.05)
    # every token of both branches the same vector √s·1: C = s·11ᵀ, and the loss at the best s is the trivial value
    p, weight = 64, 0.01
    s = 1 / (1 + weight * (p - 1))
    tokens = torch.full((2, 5, p), math.sqrt(s))
    assert float(cross_correlation_loss(tokens, tokens, weight)) == pytest.approx(trivial_cross_correlation(p, weight), rel=1e-5)
    for other in (0.8 * s, 1.2 * s):  # any other constant is worse
        worse = torch.full((2, 5, p), math.sqrt(other))
        assert float(cross_correlation_loss(worse, worse, weight)) > trivial_cross_correlation(p, weight)


def _measure(states: list[torch.Tensor], c: torch.Tensor) -> Health:
    meter = HealthMeter(trivial=368.0)
    meter.add_states(states)
    meter.add_correlation(c, 368.0)
    return meter.result()


def test_collapsed_features_have_no_variation_and_rank_one():
    generator = torch.Generator().manual_seed(0)
    vector = torch.randn(1, 8, 1, 1, 1, generator=generator)
    collapsed = [vector.expand(2, 8, 4, 4, 4).clone() for _ in range(5)]
    varied = [torch.randn(2, 8, 4, 4, 4, generator=generator) for _ in range(5)]
    z = torch.randn(2, 16, 32, generator=generator)
    one = _measure(collapsed, z[:, :1].transpose(1, 2) @ z[:, :1] / 16)
    many = _measure(varied, z.transpose(1, 2) @ z / 16)
    assert one.variation == pytest.approx([0.0] * 5, abs=1e-6)
    assert one.effective_rank == pytest.approx([1.0] * 5, abs=1e-3)
    assert one.correlation_rank == 1
    assert all(0.9 < v <= 1.0 for v in many.variation)  # centred random channels
    assert all(6 < r <= 8 for r in many.effective_rank) and many.rank_bound == [8] * 5
    assert many.correlation_rank == 16  # n = 16 tokens: C has rank 16 of 32
    assert one.collapsed(many) and not many.collapsed(many)
    assert "collapsing" in collapse_warning(one, many) and "\n" not in collapse_warning(one, many)


def test_correlation_rank_counts_singular_values_above_the_tolerance():
    c = torch.diag(torch.tensor([1.0, 0.5, 0.02, 0.001])).expand(3, 4, 4)
    assert correlation_rank(c).tolist() == [3, 3, 3]


def test_scalars_round_trip():
    health = Health(
        variation=[0.9, 0.7, 0.5, 0.3, 0.1],
        effective_rank=[5.0, 9.0, 20.0, 30.0, 4.0],
        rank_bound=[12, 24, 48, 96, 16],
        correlation_rank=6.0,
        cross_correlation=400.0,
        trivial=368.0,
    )
    back = Health.from_scalars({f"val/{k}": v for k, v in health.scalars().items()}, 368.0)
    assert back.variation == health.variation and back.effective_rank == health.effective_rank
    assert back.cross_correlation == pytest.approx(400.0) and back.correlation_rank == 6.0
    assert Health.from_scalars({"val/loss": 1.0}, 368.0) is None


def test_variance_term_is_zero_for_varied_tokens_and_largest_for_one_vector():
    generator = torch.Generator().manual_seed(0)
    varied = 3 * torch.randn(2, 64, 16, generator=generator)
    constant = torch.randn(1, 1, 16, generator=generator).expand(2, 64, 16)
    assert float(variance_loss(varied)) == pytest.approx(0.0, abs=1e-6)
    assert float(variance_loss(constant)) == pytest.approx(1.0, abs=0.02)
    with pytest.raises(ValueError, match="n ≥ 2"):
        variance_loss(varied[:, :1])


def test_initial_encoder_on_a_real_brain_is_healthy(mni_t1):
    """A random Swin encoder's stages on an ICBM152 T1 crop: tokens vary at every stage."""
    torch.manual_seed(0)
    encoder = MaskedSwinEncoder(1, 12).eval()
    x = crop(mni_t1, (40, 50, 40), (64, 64, 64))[None, None]
    x = (x - x.mean()) / x.std()
    with torch.no_grad():
        states = encoder(x)
    health = _measure(states, torch.eye(4)[None])
    assert all(0.1 < v <= 1 for v in health.variation), health.variation
    assert health.rank_bound == [12, 24, 48, 64, 8]  # min(channels, tokens)
