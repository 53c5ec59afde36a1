"""Representation health: whether the encoder's features still tell places apart (docs/method.md §5).

GMIM's cross-correlation loss, unstandardised as the paper states it, has a trivial minimum: every
token of both branches projected to one constant vector. An encoder that falls into it
("collapses") has final-stage features that are the same everywhere, and L_cc then sits at the
value of :func:`trivial_cross_correlation`. The loss alone cannot tell that apart from learning, so
every pre-training run measures, on fixed views, for each of the encoder's five hidden states:

- the **token variation**: the share of the features' magnitude that varies from token to token,
  √(Σ_c Var_tokens(h_c) / Σ_c mean_tokens(h_c²)), per view, averaged over the views. 1: every
  channel is centred over the tokens; 0: every token is the same vector. The hidden states are
  layer-normalised over their channels, so the scale cannot hide a collapse;
- the **effective rank** (RankMe, Garrido et al. 2023): exp of the entropy of the normalised
  singular values of the (tokens × channels) matrix of all views' tokens, from 1 to
  min(tokens, channels);

and, of the two branches' projections as the loss sees them, the **rank of C** (singular values
above :data:`RANK_TOLERANCE` of the largest, the mean over views) and **L_cc above its trivial
value**. A method without GMIM's cross-correlation (Swin UNETR's own pre-training,
:mod:`gmim.swinssl`) measures the encoder's stages alone: its meter has no trivial value, and its
:class:`Health` no correlation entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gmim.engine.metrics import read_metrics

__all__ = [
    "COLLAPSE_FRACTION",
    "RANK_TOLERANCE",
    "Health",
    "HealthMeter",
    "collapse_warning",
    "correlation_rank",
    "trivial_cross_correlation",
]

#: A run has collapsed when its final-stage token variation falls below this fraction of the
#: variation of the encoder it started from.
COLLAPSE_FRACTION = 0.1
#: Singular values of C under this fraction of its largest do not count towards its rank.
RANK_TOLERANCE = 1e-2
#: The encoder's hidden states: after the patch embedding, then after each of the four stages.
STAGES = 5


def trivial_cross_correlation(projection_dim: int, off_diagonal_weight: float) -> float:
    """L_cc at its trivial minimum C = s·11ᵀ: min over s of P(1 − s)² + λ(P² − P)s², reached at
    s = 1 / (1 + λ(P − 1)); 368.0 for P = 512, λ = 0.005."""
    spread = off_diagonal_weight * (projection_dim - 1)
    return projection_dim * spread / (1 + spread)


def correlation_rank(c: Tensor, tolerance: float = RANK_TOLERANCE) -> Tensor:
    """The numerical rank of each (P, P) matrix of ``c`` (B, P, P): singular values above
    ``tolerance`` times the largest."""
    singular = torch.linalg.svdvals(c.double())
    return (singular > tolerance * singular[:, :1]).sum(1)


@dataclass
class Health:
    """One measurement; lists run over the encoder's five hidden states."""

    variation: list[float]
    effective_rank: list[float]
    #: The largest effective rank each stage could have: min(tokens, channels).
    rank_bound: list[int]
    #: GMIM's projections (None for a method without its cross-correlation).
    correlation_rank: float | None = None
    cross_correlation: float | None = None
    trivial: float | None = None

    def scalars(self) -> dict[str, float]:
        """Flat scalars for ``metrics.jsonl`` and TensorBoard (``health/…``)."""
        scalars = {f"health/variation{i}": v for i, v in enumerate(self.variation)}
        scalars |= {f"health/effective_rank{i}": r for i, r in enumerate(self.effective_rank)}
        if self.correlation_rank is not None:
            scalars["health/correlation_rank"] = self.correlation_rank
        if self.cross_correlation is not None and self.trivial is not None:
            scalars["health/cc_above_trivial"] = self.cross_correlation - self.trivial
        return scalars

    def relative(self, initial: Health) -> float:
        """The final stage's variation as a fraction of ``initial``'s."""
        return self.variation[-1] / max(initial.variation[-1], 1e-12)

    def collapsed(self, initial: Health) -> bool:
        return self.relative(initial) < COLLAPSE_FRACTION

    def line(self, initial: Health | None = None) -> str:
        """One line: the final stage's variation (and its share of the initial), every stage's
        variation and effective rank, C's rank and L_cc against its trivial value."""
        final = f"final-stage variation {self.variation[-1]:.3f}"
        if initial is not None:
            final += f" ({self.relative(initial):.0%} of the initial {initial.variation[-1]:.3f})"
        stages = " ".join(f"{v:.2f}" for v in self.variation)
        ranks = " ".join(f"{r:.1f}/{b}" for r, b in zip(self.effective_rank, self.rank_bound))
        line = f"{final}; variation by stage {stages}; effective rank {ranks}"
        if self.correlation_rank is not None:
            line += f"; rank of C {self.correlation_rank:.1f}"
        if self.cross_correlation is not None and self.trivial is not None:
            line += f"; L_cc {self.cross_correlation:.1f} (trivial {self.trivial:.1f})"
        return line

    def record(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_scalars(cls, scalars: Mapping[str, float], trivial: float | None = None) -> Health | None:
        """Back from :meth:`scalars` (with or without a ``val/`` prefix), e.g. read from ``metrics.jsonl``;
        None where they are missing. ``trivial``: L_cc's trivial value (None: a method without it)."""
        plain = {key.removeprefix("val/"): value for key, value in scalars.items()}
        if f"health/variation{STAGES - 1}" not in plain:
            return None
        above = plain.get("health/cc_above_trivial") if trivial is not None else None
        return cls(
            variation=[plain[f"health/variation{i}"] for i in range(STAGES)],
            effective_rank=[plain[f"health/effective_rank{i}"] for i in range(STAGES)],
            rank_bound=[0] * STAGES,
            correlation_rank=plain.get("health/correlation_rank"),
            cross_correlation=above + trivial if above is not None and trivial is not None else None,
            trivial=trivial,
        )


class HealthMeter:
    """Accumulates views' hidden states and correlation matrices into one :class:`Health`.

    Memory does not grow with the views: each stage keeps its (C, C) Gram matrix in float64.
    ``trivial``: L_cc's trivial value, and the correlations are then part of the measurement
    (:meth:`add_correlation`); None: the encoder's stages alone."""

    def __init__(self, trivial: float | None = None) -> None:
        self.trivial = trivial
        self.views = 0
        self.variation = [0.0] * STAGES
        self.grams: list[Tensor | None] = [None] * STAGES
        self.tokens = [0] * STAGES
        self.ranks: list[float] = []
        self.cross_correlations: list[float] = []

    def add_states(self, states: Iterable[Tensor]) -> None:
        """The five hidden states (B, C, d, h, w) of the encoder on a batch of unmasked views."""
        states = list(states)
        if len(states) != STAGES:
            raise ValueError(f"expected the encoder's {STAGES} hidden states, got {len(states)}")
        for stage, state in enumerate(states):
            tokens = state.detach().double().flatten(2)  # (B, C, n)
            variance = tokens.var(2, unbiased=False).sum(1)
            energy = tokens.pow(2).mean(2).sum(1).clamp_min(1e-30)
            self.variation[stage] += float((variance / energy).sqrt().sum())
            flat = tokens.transpose(1, 2).reshape(-1, tokens.shape[1])  # (B·n, C)
            gram = flat.T @ flat
            previous = self.grams[stage]
            self.grams[stage] = gram if previous is None else previous + gram
            self.tokens[stage] += flat.shape[0]
        self.views += states[0].shape[0]

    def add_correlation(self, c: Tensor, cross_correlation: float) -> None:
        """The branches' cross-correlation matrices (B, P, P) of a batch and its mean L_cc."""
        self.ranks += correlation_rank(c.detach()).tolist()
        self.cross_correlations.append(cross_correlation)

    def result(self) -> Health:
        if not self.views or (self.trivial is not None and not self.ranks):
            raise ValueError("no views measured")
        ranks, bounds = [], []
        for gram, tokens in zip(self.grams, self.tokens):
            assert gram is not None, "add_states fills every stage's Gram matrix, and views > 0"
            singular = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()  # of the token matrix
            p = singular / singular.sum().clamp_min(1e-30) + 1e-7  # RankMe's ε
            ranks.append(float(torch.exp(-(p * p.log()).sum())))
            bounds.append(min(tokens, gram.shape[0]))
        return Health(
            variation=[v / self.views for v in self.variation],
            effective_rank=ranks,
            rank_bound=bounds,
            correlation_rank=sum(self.ranks) / len(self.ranks) if self.ranks else None,
            cross_correlation=sum(self.cross_correlations) / len(self.cross_correlations) if self.cross_correlations else None,
            trivial=self.trivial,
        )


#: What to try against GMIM's collapse (the end of :func:`collapse_warning`'s line).
GMIM_ADVICE = (
    "few final-stage tokens (a small model.roi) and a high train.lr bring this on: try loss.variance_weight=1, "
    "a lower train.lr or a larger model.roi (docs/method.md §5)"
)


def collapse_warning(health: Health, initial: Health, advice: str = GMIM_ADVICE) -> str:
    """The one-line warning of a collapsed run: what it means and what to try (``advice``)."""
    cc, trivial = health.cross_correlation, health.trivial
    at_trivial = cc is not None and trivial is not None and abs(cc - trivial) < 0.01 * trivial
    return (
        f"warning: the encoder is collapsing: its final-stage tokens vary {health.relative(initial):.1%} as much as at the "
        f"start (under {COLLAPSE_FRACTION:.0%}), so every place gets nearly the same features"
        + (f", and L_cc {cc:.1f} sits at its trivial value {trivial:.1f}" if at_trivial else "")
        + f"; {advice}"
    )


def recorded_initial_health(metrics: Path, trivial: float | None = None) -> Health | None:
    """The initial encoder's health as a run recorded it at step 0 in ``metrics`` (its
    metrics.jsonl): the baseline a resumed run measures against. None where it is not recorded."""
    records = read_metrics(metrics) if metrics.is_file() else []
    return next((h for r in records if r.get("step") == 0 and (h := Health.from_scalars(r, trivial))), None)


def final_health(health: Health | None, initial: Health | None) -> dict[str, Any]:
    """The final encoder's health against the initial one, printed and as ``summary.json``'s
    ``health`` (empty where either was not measured)."""
    if health is None or initial is None:
        return {}
    collapsed = health.collapsed(initial)
    print(f"representation health{' (COLLAPSED)' if collapsed else ''}: {health.line(initial)}", flush=True)
    return {
        "health": {
            "initial": initial.record(),
            "final": health.record(),
            "final_stage_relative": health.relative(initial),
            "collapsed": collapsed,
        }
    }
