"""Attribute scorers: how toxic or how formal a text is, as a number in [0, 1] per text.

Three kinds share one interface (:class:`AttributeScorer`, ``score(texts) -> array``):

- :class:`LexiconScorer`, for the built-in organisms: the share of a text's words in the
  attribute's lexicon (:func:`actspace.world.attributes.attribute_score`). The organisms' world
  marks these words, so the score measures exactly what the organisms were trained to produce.
- :class:`ClassifierScorer`, for hub models: a Hugging Face text classifier loaded through
  ``transformers`` (for example ``s-nlp/roberta_toxicity_classifier`` or
  ``s-nlp/roberta-base-formality-ranker``); the score is the softmax probability of the configured
  label (the sigmoid of the single logit of a one-output ranker).
- :class:`OfflineScorer`, for any model without network: toxicity only, the probability of
  offensive language from the linear classifier (TF-IDF and a calibrated linear SVM, trained on
  about 200,000 labelled comments) that the PyPI package ``alt-profanity-check`` ships inside its
  wheel (the ``scorers`` extra). No well-kept package ships an English formality classifier, so
  formality has no offline kind: it needs the classifier kind and a hub model in the local cache.

A scorer is configured per attribute as ``{kind, classifier, label, revision, batch_size}``;
``kind: auto`` picks the lexicon for a built-in organism and the classifier for any other model.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from actspace.lm.models import ModelLoadError, resolve_device
from actspace.world.attributes import ATTRIBUTES, attribute_score

SCORER_KINDS = ("auto", "lexicon", "classifier", "offline")
#: The attributes the offline kind can score.
OFFLINE_ATTRIBUTES = ("toxicity",)

#: The classifier each attribute uses unless configured otherwise, and the label that means
#: "has the attribute" (``id2label`` of the model's config; matched case-insensitively).
DEFAULT_CLASSIFIERS: dict[str, dict[str, str]] = {
    "toxicity": {"classifier": "s-nlp/roberta_toxicity_classifier", "label": "toxic"},
    "formality": {"classifier": "s-nlp/roberta-base-formality-ranker", "label": "formal"},
}


class ScorerLoadError(ModelLoadError):
    """A classifier scorer could not be loaded; the message is one line saying how to fix it."""


class AttributeScorer:
    """Scores texts for one attribute; higher means more of it, every score in [0, 1]."""

    kind: str = "abstract"

    def __init__(self, attribute: str) -> None:
        if attribute not in ATTRIBUTES:
            raise ValueError(f"unknown attribute {attribute!r}; allowed: {', '.join(ATTRIBUTES)}")
        self.attribute = attribute

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """One score in [0, 1] per text (float64)."""
        raise TypeError(f"{type(self).__name__} does not define score()")

    def describe(self) -> dict[str, Any]:
        """What results.json records about the scorer."""
        return {"attribute": self.attribute, "kind": self.kind}


class LexiconScorer(AttributeScorer):
    """The share of a text's words in the attribute's lexicon (the built-in world's markers)."""

    kind = "lexicon"

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([attribute_score(text, self.attribute) for text in texts], dtype=float)


class OfflineScorer(AttributeScorer):
    """Toxicity as the offensive-language probability of ``alt-profanity-check``'s classifier,
    which ships inside the package's wheel (no network, no model download)."""

    kind = "offline"

    def __init__(self, attribute: str) -> None:
        super().__init__(attribute)
        if attribute not in OFFLINE_ATTRIBUTES:
            raise ValueError(
                f"kind offline scores {', '.join(OFFLINE_ATTRIBUTES)} only, not {attribute}: no "
                "well-kept package ships an offline classifier for it; set "
                f"experiments.behavior_edit.scorers.{attribute}.kind to classifier (a hub model "
                "in the local cache) or lexicon"
            )
        try:
            import profanity_check
        except ImportError as exc:
            raise ScorerLoadError(
                "the offline toxicity scorer needs the alt-profanity-check package: "
                "pip install 'actspace[scorers]'"
            ) from exc
        self._predict = profanity_check.predict_prob
        self.version = _package_version("alt-profanity-check")

    def score(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros(0, dtype=float)
        return np.clip(np.asarray(self._predict(texts), dtype=float), 0.0, 1.0)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "package": "alt-profanity-check", "version": self.version}


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


class ClassifierScorer(AttributeScorer):
    """The probability a Hugging Face sequence classifier gives the attribute's label."""

    kind = "classifier"

    def __init__(
        self,
        attribute: str,
        classifier: str | os.PathLike[str],
        label: str,
        *,
        revision: str | None = None,
        device: str = "auto",
        batch_size: int = 32,
        max_length: int = 512,
    ) -> None:
        super().__init__(attribute)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.classifier = os.fspath(classifier)
        self.revision = revision
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.device = resolve_device(device)
        self.tokenizer, self.model = _load_classifier(attribute, self.classifier, revision)
        self.model.to(self.device)
        self.model.eval()
        self.label, self.label_index = _label_index(
            self.model.config, label, attribute, self.classifier
        )

    @torch.no_grad()
    def score(self, texts: Sequence[str]) -> np.ndarray:
        scores: list[float] = []
        texts = list(texts)
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            encoded = self.tokenizer(
                batch,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            logits = self.model(**encoded).logits.float()
            if logits.shape[-1] == 1:
                probs = torch.sigmoid(logits[:, 0])
            else:
                probs = torch.softmax(logits, dim=-1)[:, self.label_index]
            scores.extend(probs.cpu().tolist())
        return np.asarray(scores, dtype=float)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "classifier": self.classifier,
            "label": self.label,
            "label_index": self.label_index,
            "revision": self.revision,
        }


def _load_classifier(
    attribute: str, classifier: str, revision: str | None
) -> tuple[Any, torch.nn.Module]:
    folder = Path(classifier).expanduser()
    local = folder.is_dir()
    options: dict[str, Any] = {"local_files_only": True} if local else {}
    if revision and not local:
        options["revision"] = revision
    where = f"the {attribute} classifier '{classifier}'"
    fix = (
        f"set experiments.behavior_edit.scorers.{attribute}.classifier to a local folder or a "
        "cached hub id (HF_HOME), or use kind: lexicon"
    )
    if not local and (classifier.startswith((".", "/", "~")) or classifier.count("/") > 1):
        raise ScorerLoadError(f"could not load {where}: no such folder; {fix}")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(folder) if local else classifier, **options
        )
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(folder) if local else classifier, **options
        )
    except Exception as exc:
        module = type(exc).__module__.split(".")[0]
        if not isinstance(exc, OSError | ValueError) and module not in (
            "huggingface_hub",
            "httpx",
            "requests",
        ):
            raise
        text = str(exc).strip()
        lowered = text.lower()
        if not local and any(
            marker in lowered
            for marker in ("couldn't connect", "offline", "connection", "local cache", "resolve")
        ):
            reason = "not in the local Hugging Face cache and the hub cannot be reached"
        else:
            reason = text.splitlines()[0] if text else type(exc).__name__
        raise ScorerLoadError(f"could not load {where}: {reason}; {fix}") from exc
    return tokenizer, model


def _label_index(config: Any, label: str, attribute: str, classifier: str) -> tuple[str, int]:
    """The index of ``label`` in the classifier's ``id2label`` (case-insensitive)."""
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    if getattr(config, "num_labels", len(id2label)) == 1:
        return id2label.get(0, label), 0
    for index, name in sorted(id2label.items()):
        if name.lower() == str(label).lower():
            return name, index
    known = ", ".join(name for _, name in sorted(id2label.items()))
    raise ValueError(
        f"the {attribute} classifier '{classifier}' has no label {label!r} (its labels: {known}); "
        f"set experiments.behavior_edit.scorers.{attribute}.label"
    )


def resolve_kind(kind: str, model_source: str) -> str:
    """``auto`` -> ``lexicon`` for a built-in organism, ``classifier`` for a hub or local model."""
    if kind not in SCORER_KINDS:
        raise ValueError(f"unknown scorer kind {kind!r}; allowed: {', '.join(SCORER_KINDS)}")
    if kind != "auto":
        return kind
    return "lexicon" if model_source == "organism" else "classifier"


def make_scorer(
    attribute: str,
    spec: Mapping[str, Any] | None = None,
    *,
    model_source: str = "organism",
    device: str = "auto",
) -> AttributeScorer:
    """The scorer ``spec`` configures for ``attribute`` (see the module docstring for the keys)."""
    spec = dict(spec or {})
    unknown = sorted(set(spec) - {"kind", "classifier", "label", "revision", "batch_size"})
    if unknown:
        raise ValueError(f"unknown scorer key(s) for {attribute}: {', '.join(unknown)}")
    kind = resolve_kind(spec.get("kind", "auto"), model_source)
    if kind == "lexicon":
        return LexiconScorer(attribute)
    if kind == "offline":
        return OfflineScorer(attribute)
    if attribute not in DEFAULT_CLASSIFIERS:
        raise ValueError(f"unknown attribute {attribute!r}; allowed: {', '.join(ATTRIBUTES)}")
    defaults = DEFAULT_CLASSIFIERS[attribute]
    return ClassifierScorer(
        attribute,
        spec.get("classifier") or defaults["classifier"],
        spec.get("label") or defaults["label"],
        revision=spec.get("revision"),
        device=device,
        batch_size=int(spec.get("batch_size") or 32),
    )
