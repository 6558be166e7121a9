"""Contrast-Consistent Search (Burns et al. 2022): an unsupervised linear probe for truth.

CCS reads statements whose truth is tied together by logic and looks for a direction along
which they are *consistent* and *confident*. In the paper a contrast pair is a question answered
both ways: exactly one side is true, so a probe ``p(x) = sigmoid(w . x + b)`` should give
``p(x+) = 1 - p(x-)``, and the loss is::

    L = mean[(p(x+) - (1 - p(x-)))^2 + min(p(x+), p(x-))^2]          (:func:`ccs_loss`)

For a multiple-choice item the statements are its choices: each choice ``j`` is the statement
"the answer to this question is choice ``j``" (here the residual stream at the end of the
question followed by that choice), true for exactly one choice. The negation of statement ``j``
is "the answer is one of the others", whose probability is ``sum_{k != j} p_k``. CCS's
consistency, ``p_j = 1 - P(not j)``, becomes ``S = sum_k p_k = 1`` for every ``j``; its
confidence term, the probability of the less likely of a statement and its negation, becomes
``(S - max_j p_j)^2``: the negation of the most believed statement must be near 0
(:func:`choice_loss`). With two choices both are exactly the paper's terms. With four, no pair
"chosen vs. one other choice" is required to hold one truth (both are false when the model is
wrong and the truth is a third choice).

Each role is normalised on its own, mean-centred and scaled per dimension with the training
items' statistics: the model's chosen answer, and the other choices. This is the paper's per-side
normalisation with the model's own answer as the side, and it removes the trivial "this is the
answer the model picked" direction. The probe is trained with full-batch AdamW from several
random starts (all optimised together, the lowest final loss kept). CCS's answer to an item is
its most believed choice; the model is predicted right when it gave that answer. The item's
score is the paper's ``(p(x+) + 1 - p(x-)) / 2`` with ``x+`` the model's chosen answer and
``x-`` its strongest rival, at least one half exactly then (with two choices, the paper's score
of the pair). With two choices per item the loss cannot tell ``w`` from ``-w``, and
:func:`orientation` fixes the sign by a reference that needs no labels; with more, the loss
fixes it (:func:`sign_is_free`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr

_EPS = 1e-6


def ccs_loss(p_pos: torch.Tensor, p_neg: torch.Tensor) -> torch.Tensor:
    """The paper's loss on binary contrast pairs: consistency plus confidence, averaged over
    pairs (the last axis)."""
    consistency = (p_pos - (1.0 - p_neg)) ** 2
    confidence = torch.minimum(p_pos, p_neg) ** 2
    return (consistency + confidence).mean(dim=-1)


def choice_loss(p: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """CCS's loss on items whose choices are statements, exactly one of them true.

    ``p`` [..., items, choices] are the statements' probabilities, ``mask`` [items, choices]
    the real choice slots. Per item, with ``S = sum_k p_k``: consistency ``(S - 1)^2`` (each
    statement ``j`` against its negation, whose probability is ``S - p_j``) plus confidence
    ``(S - max_j p_j)^2``, the negation of the most believed statement (the paper's
    ``min(p(x+), p(x-))^2`` for two choices); averaged over items (the last axis of the result).
    """
    p = p * mask
    total = p.sum(dim=-1)
    confidence = (total - p.max(dim=-1).values) ** 2
    return ((total - 1.0) ** 2 + confidence).mean(dim=-1)


# --------------------------------------------------------------------------------------------
# The statements: every item's choices, with the model's chosen one
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChoiceSets:
    """Per item, one activation per choice (a statement "the answer is this choice").

    ``acts`` [items, max_choices, d]; ``mask`` [items, max_choices] marks the real choices
    (items may have fewer, zero-padded); ``chosen`` [items] is the model's answer.
    """

    acts: np.ndarray
    mask: np.ndarray
    chosen: np.ndarray

    def subset(self, positions: np.ndarray) -> ChoiceSets:
        """The items at ``positions``."""
        positions = np.asarray(positions, dtype=int)
        return ChoiceSets(self.acts[positions], self.mask[positions], self.chosen[positions])

    @property
    def n_items(self) -> int:
        return int(self.chosen.size)

    def chosen_acts(self) -> np.ndarray:
        """The chosen answer's activation per item, [items, d]."""
        return self.acts[np.arange(self.n_items), self.chosen]

    def others(self) -> np.ndarray:
        """Which slots hold a real choice other than the chosen one, bool [items, max_choices]."""
        other = self.mask.copy()
        other[np.arange(self.n_items), self.chosen] = False
        return other


def choice_sets(acts: np.ndarray, mask: np.ndarray, chosen: np.ndarray) -> ChoiceSets:
    """Checked :class:`ChoiceSets`: shapes agree, the chosen answers are real choices, and every
    item has at least two choices (a single choice is no statement with an alternative)."""
    acts = np.asarray(acts, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    chosen = np.asarray(chosen, dtype=int)
    n, c = mask.shape
    if acts.shape[:2] != (n, c) or acts.ndim != 3 or chosen.shape != (n,):
        raise ValueError(f"shapes disagree: acts {acts.shape}, mask {mask.shape}, {chosen.shape}")
    if not mask[np.arange(n), chosen].all():
        raise ValueError("a chosen answer points at a padded choice slot")
    if (mask.sum(axis=1) < 2).any():
        raise ValueError("CCS needs at least 2 choices per item")
    return ChoiceSets(acts, mask, chosen)


@dataclass
class Normaliser:
    """Per-role mean-centring and per-dimension scaling (chosen answer; other choices), fitted on
    the training items."""

    mean_chosen: np.ndarray
    std_chosen: np.ndarray
    mean_other: np.ndarray
    std_other: np.ndarray

    @classmethod
    def fit(cls, sets: ChoiceSets) -> Normaliser:
        chosen, other = sets.chosen_acts(), sets.acts[sets.others()]
        return cls(
            mean_chosen=chosen.mean(axis=0),
            std_chosen=chosen.std(axis=0) + _EPS,
            mean_other=other.mean(axis=0),
            std_other=other.std(axis=0) + _EPS,
        )

    def transform(self, sets: ChoiceSets) -> np.ndarray:
        """The normalised activations [items, max_choices, d]; padded slots stay zero."""
        out = np.zeros_like(sets.acts)
        other = sets.others()
        out[other] = (sets.acts[other] - self.mean_other) / self.std_other
        rows = np.arange(sets.n_items)
        out[rows, sets.chosen] = (sets.chosen_acts() - self.mean_chosen) / self.std_chosen
        return out


def contrast_differences(normalised: np.ndarray, sets: ChoiceSets) -> np.ndarray:
    """Per item, the chosen answer minus the mean of the other choices [items, d] (normalised):
    the feature the top-principal-component and random-direction baselines project."""
    other = sets.others()
    counts = other.sum(axis=1, keepdims=True)
    mean_other = (normalised * other[:, :, None]).sum(axis=1) / counts
    return normalised[np.arange(sets.n_items), sets.chosen] - mean_other


# --------------------------------------------------------------------------------------------
# The probe
# --------------------------------------------------------------------------------------------


class CCS:
    """Contrast-Consistent Search: an unsupervised linear probe on multiple-choice statements.

    Parameters
    ----------
    n_restarts : random starts, optimised together; the one with the lowest final loss is kept.
    n_epochs : full-batch AdamW steps.
    lr, weight_decay : AdamW's learning rate and L2 decay (Burns et al.: 1e-2 and 1e-2).
    seed : seeds the starting points.
    """

    def __init__(
        self,
        n_restarts: int = 10,
        n_epochs: int = 1000,
        lr: float = 1e-2,
        weight_decay: float = 1e-2,
        seed: int = 0,
    ) -> None:
        if n_restarts < 1 or n_epochs < 1:
            raise ValueError("n_restarts and n_epochs must be positive")
        self.n_restarts = n_restarts
        self.n_epochs = n_epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed

    def fit(self, sets: ChoiceSets) -> CCS:
        """Fit on the items' choices (no labels: the model's chosen answer only sets the role)."""
        (probe,) = self.fit_each([sets])
        self.__dict__.update(probe.__dict__)
        return self

    def fit_each(self, problems: Sequence[ChoiceSets]) -> list[CCS]:
        """One probe per set of statements (one per layer, say), all optimised together.

        Full-batch AdamW on a few hundred statements is thousands of tiny steps whose cost is
        overhead; stacking the problems (same items, choices and width) into one batch makes
        several fits cost about one. Each problem keeps its own normalisation and restarts.
        """
        for sets in problems:
            if sets.n_items < 2:
                raise ValueError(f"CCS needs at least 2 items, got {sets.n_items}")
            if not np.array_equal(sets.mask, problems[0].mask):
                raise ValueError("CCS.fit_each needs the same items and choices in every problem")
        normalisers = [Normaliser.fit(sets) for sets in problems]
        acts = np.stack([n.transform(sets) for n, sets in zip(normalisers, problems, strict=True)])
        final, weight, bias = self._optimise(acts, problems[0].mask, None)
        probes = []
        for index, normaliser in enumerate(normalisers):
            best = int(np.argmin(final[index]))
            probe = self._blank(normaliser, final[index])
            probe._set(float(final[index, best]), weight[index, best], bias[index, best])
            probes.append(probe)
        return probes

    def fit_along(self, sets: ChoiceSets, directions: np.ndarray) -> list[CCS]:
        """CCS restricted to each fixed direction [k, d] of the normalised space: only the scale,
        of either sign, and the bias are fitted, by the same loss, optimiser and settings.

        This is the control for CCS's search over directions: a random or top-PC direction
        used exactly as CCS uses its own. Each direction starts from both signs and keeps the
        lower final loss. Returns one fitted probe per direction.
        """
        directions = np.atleast_2d(np.asarray(directions, dtype=np.float64))
        normaliser = Normaliser.fit(sets)
        k = directions.shape[0]
        both = np.concatenate([directions, -directions])
        final, weight, bias = self._optimise(normaliser.transform(sets)[None], sets.mask, both)
        final, weight, bias = final[0], weight[0], bias[0]
        probes = []
        for index in range(k):
            best = index if final[index] <= final[index + k] else index + k
            probe = self._blank(normaliser, final[[index, index + k]])
            probes.append(probe._set(float(final[best]), weight[best], bias[best]))
        return probes

    def _blank(self, normaliser: Normaliser, restart_losses: np.ndarray) -> CCS:
        probe = CCS(self.n_restarts, self.n_epochs, self.lr, self.weight_decay, self.seed)
        probe.normaliser_ = normaliser
        probe.restart_losses_ = np.asarray(restart_losses, dtype=np.float64)
        return probe

    def _set(self, loss: float, coef: np.ndarray, intercept: float) -> CCS:
        self.loss_ = loss
        self.coef_ = np.asarray(coef, dtype=np.float64)
        self.intercept_ = float(intercept)
        return self

    def _optimise(
        self, acts: np.ndarray, mask: np.ndarray, directions: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Full-batch AdamW on every problem's restarts (or fixed directions) at once.

        ``acts`` [problems, items, choices, d] (normalised), ``mask`` [items, choices]. Returns
        the final losses [problems, restarts], weights [problems, restarts, d] and biases.
        """
        n_problems, n_items, n_choices, d = acts.shape
        flat = torch.from_numpy(acts.reshape(n_problems, n_items * n_choices, d)).float()
        weights = torch.from_numpy(np.asarray(mask, dtype=np.float32))
        generator = torch.Generator().manual_seed(self.seed)
        bound = 1.0 / np.sqrt(d)  # torch.nn.Linear's initialisation
        if directions is None:
            shape = (n_problems, self.n_restarts)
            free = (torch.rand(*shape, d, generator=generator) * 2 - 1) * bound
            params = [free]

            def weight() -> torch.Tensor:
                return free

        else:
            fixed = torch.from_numpy(directions).float().expand(n_problems, -1, -1)
            shape = (n_problems, fixed.shape[1])
            # the expected norm of a free start, so that both begin equally far from zero
            scale = torch.full(shape, float(np.sqrt(1.0 / 3.0)))
            params = [scale]

            def weight() -> torch.Tensor:
                return scale[..., None] * fixed

        bias = (torch.rand(*shape, generator=generator) * 2 - 1) * bound
        params.append(bias)
        for param in params:
            param.requires_grad_(True)
        optimiser = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

        def losses() -> torch.Tensor:
            logits = torch.bmm(weight(), flat.transpose(1, 2)) + bias[..., None]
            p = torch.sigmoid(logits.reshape(*shape, n_items, n_choices))
            return choice_loss(p, weights)

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # thousands of tiny steps: worker threads only add overhead
        try:
            with torch.enable_grad():
                for _ in range(self.n_epochs):
                    optimiser.zero_grad()
                    losses().sum().backward()
                    optimiser.step()
            with torch.no_grad():
                final = losses().double().numpy()
                coef = weight().double().numpy()
        finally:
            torch.set_num_threads(threads)
        return final, coef, bias.detach().double().numpy()

    @property
    def direction_(self) -> np.ndarray:
        """The unit direction of the probe in the normalised space."""
        return self.coef_ / np.linalg.norm(self.coef_)

    def statement_probabilities(self, sets: ChoiceSets) -> np.ndarray:
        """``p_j`` for every choice [items, max_choices]; padded slots are 0."""
        logits = self.normaliser_.transform(sets) @ self.coef_ + self.intercept_
        return np.where(sets.mask, 1.0 / (1.0 + np.exp(-logits)), 0.0)

    def predict_proba(self, sets: ChoiceSets) -> np.ndarray:
        """Per item, the paper's score ``(p(x+) + 1 - p(x-)) / 2`` that the model's chosen answer
        ``x+`` is right, against its strongest rival ``x-`` (the other choice believed most).

        It is at least one half exactly when the chosen answer is CCS's own answer, the most
        believed choice: CCS answers the question, and the model is predicted right when it gave
        that answer. With two choices this is the paper's score of the pair.
        """
        p = self.statement_probabilities(sets)
        rows = np.arange(sets.n_items)
        p_chosen = p[rows, sets.chosen]
        rival = np.where(sets.others(), p, -np.inf).max(axis=1)
        return 0.5 * (p_chosen + 1.0 - rival)

    def loss(self, sets: ChoiceSets) -> float:
        """The CCS loss of the fitted probe on items (e.g. held-out ones)."""
        p = torch.from_numpy(self.statement_probabilities(sets))
        return float(choice_loss(p, torch.from_numpy(sets.mask).double()))


def sign_is_free(sets: ChoiceSets) -> bool:
    """Whether the loss leaves the probe's sign open: with two choices per item, ``w`` and
    ``-w`` (truth and falsehood) are equally consistent and confident, so the sign needs a
    convention (:func:`orientation`); with more, the flipped probe would call all but one
    choice true, which the consistency term forbids, so the loss itself fixes the sign."""
    return bool((sets.mask.sum(axis=1) == 2).all())


def orientation(score: np.ndarray, reference: np.ndarray) -> float:
    """+1 or -1: the sign that makes ``score`` rise with ``reference`` (Spearman; ties: +1)."""
    rho = spearmanr(score, reference).statistic
    return -1.0 if np.isfinite(rho) and rho < 0 else 1.0
