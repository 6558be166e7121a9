"""Forming batches with little padding: items bucketed by context length, choices by their own.

A forward call runs a rectangle of token slots: every row is padded to the call's longest row.
Extraction runs two kinds of calls (:func:`actspace.lm.forward.score_batch`): a *context pass* over
the items of a batch, and *continuation passes* over their choices. Both are formed here by the same
greedy rule over rows sorted longest first: a group grows while its padded slots stay within
``1 + tolerance`` times its real tokens. Every group, hence every pass and the whole extraction,
then runs at most ``1 + tolerance`` slots per real token, whatever the length distribution.

``extract.batch_size`` is the ceiling on items per context pass; a batch holds fewer items where
their contexts differ too much in length. The choices of one batch are split into groups of similar
length, each a forward call from the matching rows of the context pass's key/value cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Padded slots may exceed real tokens by at most this share in any forward call.
PADDING_TOLERANCE = 0.15


def fits(longest: int, n_rows: int, real: int, tolerance: float = PADDING_TOLERANCE) -> bool:
    """Whether ``n_rows`` rows padded to ``longest`` stay within tolerance of ``real`` tokens."""
    return longest * n_rows <= (1.0 + tolerance) * real


def leading_batch(
    lengths: Sequence[int], ceiling: int, tolerance: float = PADDING_TOLERANCE
) -> int:
    """How many of the leading rows (sorted longest first) form the next batch.

    At least one, at most ``ceiling``, and no more than keep the batch's padding within the
    tolerance.
    """
    if not lengths:
        return 0
    longest, real, count = lengths[0], 0, 0
    for length in lengths[:ceiling]:
        if count and not fits(longest, count + 1, real + length, tolerance):
            break
        real += length
        count += 1
    return count


def length_groups(lengths: Sequence[int], tolerance: float = PADDING_TOLERANCE) -> list[list[int]]:
    """Row indices in as few groups of similar length as keep padding within the tolerance.

    Rows are sorted longest first (index breaking ties) and cut into contiguous groups, each padded
    to its own longest row; of the fewest groups whose padded slots stay within ``1 + tolerance``
    times the real tokens, the cut with the least padding is taken (dynamic programming over the
    sorted lengths).
    """
    order = sorted(range(len(lengths)), key=lambda row: (-lengths[row], row))
    if not order:
        return []
    sizes = np.array([lengths[row] for row in order], dtype=np.int64)
    n, budget = len(sizes), tolerance * float(sizes.sum())
    cumulative = np.concatenate([[0], np.cumsum(sizes)])
    # pad[i, j]: padding of the group of sorted rows i..j-1 (i < j), padded to row i's length
    starts, stops = np.arange(n + 1)[:, None], np.arange(n + 1)[None, :]
    pad = (stops - starts) * np.append(sizes, 0)[:, None] - (
        cumulative[None, :] - cumulative[:, None]
    )
    pad = np.where(stops > starts, pad, np.inf).astype(np.float64)
    best = pad[0].copy()  # best[j]: least padding of rows 0..j-1 in the current number of groups
    cuts = [np.zeros(n + 1, dtype=np.int64)]
    while best[n] > budget:
        options = best[:, None] + pad  # last group starts at i
        cut = np.argmin(options, axis=0)
        best = options[cut, np.arange(n + 1)]
        cuts.append(cut)
    bounds, stop = [], n
    for cut in reversed(cuts):
        start = int(cut[stop]) if len(bounds) < len(cuts) - 1 else 0
        bounds.append((start, stop))
        stop = start
    return [order[a:b] for a, b in reversed(bounds)]


def padding_efficiency(slots: int, real: int) -> float | None:
    """Token slots run per real token (1.0: no padding); ``None`` without tokens."""
    return slots / real if real else None


@dataclass(frozen=True)
class PaddingPlan:
    """Token counts of a planned extraction: real tokens, token slots, forward calls."""

    real: int
    slots: int
    forward_passes: int

    @property
    def efficiency(self) -> float | None:
        """Slots per real token (see :func:`padding_efficiency`)."""
        return padding_efficiency(self.slots, self.real)


def plan_padding(
    contexts: Sequence[int],
    choices: Sequence[Sequence[int]],
    ceiling: int,
    tolerance: float = PADDING_TOLERANCE,
) -> PaddingPlan:
    """The token slots that extraction runs for items of these token lengths (one shard, in the
    order extraction sorts it: longest context first, then longest choice). With an infinite
    ``tolerance`` it gives the former fixed-count batches, each with one continuation pass."""
    order = sorted(range(len(contexts)), key=lambda i: (-contexts[i], -max(choices[i]), i))
    real = sum(contexts) + sum(sum(lengths) for lengths in choices)
    slots = passes = 0
    while order:
        count = leading_batch([contexts[i] for i in order[:ceiling]], ceiling, tolerance)
        batch, order = order[:count], order[count:]
        slots += count * contexts[batch[0]]
        rows = [length for i in batch for length in choices[i]]
        groups = length_groups(rows, tolerance)
        slots += sum(len(group) * rows[group[0]] for group in groups)
        passes += 1 + len(groups)
    return PaddingPlan(real=real, slots=slots, forward_passes=passes)
