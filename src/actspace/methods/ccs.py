"""Contrast-Consistent Search (Burns et al. 2022): an unsupervised linear probe on contrast pairs.

A contrast pair is two activations of the same item that differ only in which answer they assert
(here: the residual stream at the end of one choice and at the end of another). Each side is
normalised on its own (mean-centred and scaled per dimension, with the training pairs'
statistics), which removes the trivial "which side is this" direction. A probe
``p(x) = sigmoid(w . x + b)`` is trained *without labels* to be consistent and confident::

    L = mean[(p(x+) - (1 - p(x-)))^2 + min(p(x+), p(x-))^2]

with full-batch Adam from several random starts (all restarts optimised together, the lowest
final loss kept). A pair's score is ``(p(x+) + 1 - p(x-)) / 2``, the probability that the ``x+``
side is the true one. CCS cannot tell ``w`` from ``-w``: :func:`orientation` fixes the sign by a
reference that needs no labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr

_EPS = 1e-6


def ccs_loss(p_pos: torch.Tensor, p_neg: torch.Tensor) -> torch.Tensor:
    """Consistency plus confidence, averaged over pairs (the last axis)."""
    consistency = (p_pos - (1.0 - p_neg)) ** 2
    confidence = torch.minimum(p_pos, p_neg) ** 2
    return (consistency + confidence).mean(dim=-1)


@dataclass
class Normaliser:
    """Per-side mean-centring and per-dimension scaling, fitted on training pairs."""

    mean_pos: np.ndarray
    std_pos: np.ndarray
    mean_neg: np.ndarray
    std_neg: np.ndarray

    @classmethod
    def fit(cls, x_pos: np.ndarray, x_neg: np.ndarray) -> Normaliser:
        return cls(
            mean_pos=x_pos.mean(axis=0),
            std_pos=x_pos.std(axis=0) + _EPS,
            mean_neg=x_neg.mean(axis=0),
            std_neg=x_neg.std(axis=0) + _EPS,
        )

    def transform(self, x_pos: np.ndarray, x_neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (x_pos - self.mean_pos) / self.std_pos, (x_neg - self.mean_neg) / self.std_neg


class CCS:
    """Contrast-Consistent Search: an unsupervised linear probe on contrast pairs.

    Parameters
    ----------
    n_restarts : random starts, optimised together; the one with the lowest final loss is kept.
    n_epochs : full-batch Adam steps.
    lr, weight_decay : Adam's learning rate and L2 decay (Burns et al.: 1e-2 and 1e-2).
    seed : seeds the starting points.
    normalise : mean-centre and scale each side with the training pairs' statistics.
    """

    def __init__(
        self,
        n_restarts: int = 10,
        n_epochs: int = 1000,
        lr: float = 1e-2,
        weight_decay: float = 1e-2,
        seed: int = 0,
        normalise: bool = True,
    ) -> None:
        if n_restarts < 1 or n_epochs < 1:
            raise ValueError("n_restarts and n_epochs must be positive")
        self.n_restarts = n_restarts
        self.n_epochs = n_epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed
        self.normalise = normalise

    def _prepare(self, x_pos: np.ndarray, x_neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x_pos = np.asarray(x_pos, dtype=np.float64)
        x_neg = np.asarray(x_neg, dtype=np.float64)
        if x_pos.shape != x_neg.shape or x_pos.ndim != 2:
            raise ValueError(f"contrast pairs must be two [pairs, d] arrays, got {x_pos.shape}")
        if self.normalise:
            return self.normaliser_.transform(x_pos, x_neg)
        return x_pos, x_neg

    def fit(self, x_pos: np.ndarray, x_neg: np.ndarray) -> CCS:
        """Fit on contrast pairs (rows of ``x_pos`` and ``x_neg`` pair up); no labels."""
        x_pos = np.asarray(x_pos, dtype=np.float64)
        x_neg = np.asarray(x_neg, dtype=np.float64)
        if x_pos.shape[0] < 2:
            raise ValueError(f"CCS needs at least 2 contrast pairs, got {x_pos.shape[0]}")
        if self.normalise:
            self.normaliser_ = Normaliser.fit(x_pos, x_neg)
        pos, neg = self._prepare(x_pos, x_neg)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # thousands of tiny steps: worker threads only add overhead
        try:
            final, weight, bias = self._optimise(
                torch.from_numpy(pos).float(), torch.from_numpy(neg).float()
            )
        finally:
            torch.set_num_threads(threads)
        best = int(np.argmin(final))
        self.restart_losses_ = final
        self.loss_ = float(final[best])
        self.coef_ = weight[best].astype(np.float64)
        self.intercept_ = float(bias[best])
        return self

    def _optimise(
        self, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Full-batch AdamW on all restarts at once; returns final losses, weights, biases."""
        d = pos.shape[1]
        generator = torch.Generator().manual_seed(self.seed)
        bound = 1.0 / np.sqrt(d)  # torch.nn.Linear's initialisation
        weight = (torch.rand(self.n_restarts, d, generator=generator) * 2 - 1) * bound
        bias = (torch.rand(self.n_restarts, generator=generator) * 2 - 1) * bound
        weight.requires_grad_(True)
        bias.requires_grad_(True)
        optimiser = torch.optim.AdamW([weight, bias], lr=self.lr, weight_decay=self.weight_decay)

        def losses() -> torch.Tensor:
            return ccs_loss(
                torch.sigmoid(weight @ pos.T + bias[:, None]),
                torch.sigmoid(weight @ neg.T + bias[:, None]),
            )

        with torch.enable_grad():
            for _ in range(self.n_epochs):
                optimiser.zero_grad()
                losses().sum().backward()
                optimiser.step()
        with torch.no_grad():
            final = losses().double().numpy()
        return final, weight.detach().double().numpy(), bias.detach().double().numpy()

    def flip(self) -> CCS:
        """Negate the direction: ``p`` becomes ``1 - p`` (the loss is unchanged)."""
        self.coef_ = -self.coef_
        self.intercept_ = -self.intercept_
        return self

    @property
    def direction_(self) -> np.ndarray:
        """The unit direction of the probe in the normalised space."""
        return self.coef_ / np.linalg.norm(self.coef_)

    def pair_probabilities(
        self, x_pos: np.ndarray, x_neg: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``p(x+)`` and ``p(x-)`` per pair."""
        pos, neg = self._prepare(x_pos, x_neg)
        p_pos = 1.0 / (1.0 + np.exp(-(pos @ self.coef_ + self.intercept_)))
        p_neg = 1.0 / (1.0 + np.exp(-(neg @ self.coef_ + self.intercept_)))
        return p_pos, p_neg

    def predict_proba(self, x_pos: np.ndarray, x_neg: np.ndarray) -> np.ndarray:
        """Per pair, the probability that the ``x+`` side is true: ``(p(x+) + 1 - p(x-)) / 2``."""
        p_pos, p_neg = self.pair_probabilities(x_pos, x_neg)
        return 0.5 * (p_pos + 1.0 - p_neg)

    def loss(self, x_pos: np.ndarray, x_neg: np.ndarray) -> float:
        """The CCS loss of the fitted probe on pairs (e.g. held-out ones)."""
        p_pos, p_neg = self.pair_probabilities(x_pos, x_neg)
        return float(ccs_loss(torch.from_numpy(p_pos), torch.from_numpy(p_neg)))


# --------------------------------------------------------------------------------------------
# Contrast pairs from per-choice activations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContrastPairs:
    """Pairs (chosen answer, other choice); ``item`` is each pair's position in the item list."""

    x_pos: np.ndarray
    x_neg: np.ndarray
    item: np.ndarray

    def subset(self, positions: np.ndarray) -> ContrastPairs:
        """The pairs of the items at ``positions``, with ``item`` renumbered 0..len-1."""
        positions = np.asarray(positions, dtype=int)
        lookup = np.full(max(int(self.item.max()), int(positions.max(initial=0))) + 1, -1)
        lookup[positions] = np.arange(positions.size)
        keep = lookup[self.item] >= 0
        return ContrastPairs(self.x_pos[keep], self.x_neg[keep], lookup[self.item[keep]])


def contrast_pairs(acts: np.ndarray, mask: np.ndarray, chosen: np.ndarray) -> ContrastPairs:
    """One pair per item and non-chosen real choice: (chosen choice, other choice).

    ``acts`` [items, max_choices, d], ``mask`` [items, max_choices], ``chosen`` [items].
    """
    acts = np.asarray(acts, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    chosen = np.asarray(chosen, dtype=int)
    n, c = mask.shape
    if acts.shape[:2] != (n, c) or chosen.shape != (n,):
        raise ValueError(f"shapes disagree: acts {acts.shape}, mask {mask.shape}, {chosen.shape}")
    if not mask[np.arange(n), chosen].all():
        raise ValueError("a chosen answer points at a padded choice slot")
    other = mask.copy()
    other[np.arange(n), chosen] = False
    items, slots = np.nonzero(other)
    if items.size == 0:
        raise ValueError("no contrast pairs: every item has a single choice")
    return ContrastPairs(x_pos=acts[items, chosen[items]], x_neg=acts[items, slots], item=items)


def item_means(values: np.ndarray, item: np.ndarray, n_items: int) -> np.ndarray:
    """Mean of per-pair ``values`` (1-d, or 2-d over rows) for each item."""
    counts = np.bincount(item, minlength=n_items).astype(float)
    if values.ndim == 1:
        return np.bincount(item, weights=values, minlength=n_items) / counts
    out = np.zeros((n_items, values.shape[1]))
    np.add.at(out, item, values)
    return out / counts[:, None]


def orientation(score: np.ndarray, reference: np.ndarray) -> float:
    """+1 or -1: the sign that makes ``score`` rise with ``reference`` (Spearman; ties: +1)."""
    rho = spearmanr(score, reference).statistic
    return -1.0 if np.isfinite(rho) and rho < 0 else 1.0
