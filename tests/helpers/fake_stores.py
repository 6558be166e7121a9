"""A duck-typed activation store backed by arrays: the attributes the pre-mortems read."""

from __future__ import annotations

import numpy as np


class FakeStore:
    """The attributes of ``ActivationStore`` that the pre-mortems read, backed by arrays."""

    def __init__(
        self,
        layers: list[np.ndarray],
        correct: np.ndarray | None = None,
        logliks: list[np.ndarray] | None = None,
        model: str = "fake",
        pooled: dict[str, list[np.ndarray]] | None = None,
    ) -> None:
        self._layers = layers
        # other poolings than `last` (for example `mean`), one array per layer like ``layers``
        self._pooled = {"last": layers, **(pooled or {})}
        self.poolings = list(self._pooled)
        self.n_layers = len(layers) - 1
        self.n_items = layers[0].shape[0]
        self.hidden_size = layers[0].shape[1]
        self._correct = correct
        self._logliks = logliks
        self.meta = {"model": model, "task": "synthetic", "n_items": self.n_items}

    def layer(self, k: int, pooling: str = "last") -> np.ndarray:
        if pooling not in self._pooled:
            raise ValueError(f"pooling {pooling!r} not in this store; available: {self.poolings}")
        return self._pooled[pooling][k].astype(np.float32)

    def correct(self) -> np.ndarray:
        assert self._correct is not None
        return self._correct

    def logliks(self) -> list[np.ndarray]:
        assert self._logliks is not None
        return self._logliks

    def scores(self) -> list[dict]:
        return [{"id": f"item{i}"} for i in range(self.n_items)]


#: The record contract's opening keys, in order (no top-level ``verdict``).
CONTRACT = [
    "premortem",
    "name",
    "metric",
    "value",
    "ci",
    "ci_level",
    "threshold",
    "plan_verdict",
    "control",
    "controlled",
    "controlled_verdict",
    "n",
    "duration_s",
    "date",
    "metric_description",
]
#: The keys every pre-mortem record opens with, before its description.
TOP_LEVEL = set(CONTRACT[:-1])


#: Every keyword of the entry functions, spelled out (the schema's defaults, all items), so that
#: these known answers do not move when a default in the schema does.
PM1 = {
    "layer_depth": 0.5,
    "pooling": "last",
    "n_samples": None,
    "folds": 5,
    "repeats": 2,
    "ridge_alpha": "auto",
    "n_permutations": 5,
    "n_bootstrap": 1000,
    "threshold": 0.3,
    "seed": 0,
}
PM2 = {
    "layer": "auto",
    "pooling": "last",
    "n_samples": None,
    "folds": 5,
    "repeats": 2,
    "val_fraction": 0.25,
    "cv_folds": 5,
    "n_bootstrap": 1000,
    "threshold": 0.55,
    "seed": 0,
}


def model_stores(planted: bool, n: int = 240, seed: int = 0) -> dict[str, FakeStore]:
    """Two models; with ``planted`` both read a shared latent linearly (plus noise)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 8))
    stores = {}
    for name, (n_layers, d) in {"small": (4, 24), "large": (8, 40)}.items():
        layers = []
        for _ in range(n_layers + 1):
            source = latent if planted else rng.normal(size=(n, 8))
            layers.append(source @ rng.normal(size=(8, d)) + 0.3 * rng.normal(size=(n, d)))
        stores[name] = FakeStore(layers, model=name)
    return stores


def probe_store(planted: bool, n: int = 300, seed: int = 0) -> FakeStore:
    """Correctness is a linear function of layer 2 (others are noise), or of nothing."""
    rng = np.random.default_rng(seed)
    layers = [rng.normal(size=(n, 12)) for _ in range(4)]
    weights = rng.normal(size=12)
    correct = layers[2] @ weights > 0.3 if planted else rng.random(n) < 0.6
    logliks = [rng.normal(size=4) for _ in range(n)]
    return FakeStore(layers, correct=correct, logliks=logliks)
