"""Attribute scorers: the lexicon scorer's known values, a local classifier, the offline toxicity
classifier, and offline errors."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
import transformers
from helpers.tiny import make_tokenizer

from actspace.config import ConfigError, resolve_config
from actspace.lm.models import ModelLoadError
from actspace.methods.scorers import (
    ClassifierScorer,
    LexiconScorer,
    OfflineScorer,
    ScorerLoadError,
    make_scorer,
    resolve_kind,
)
from actspace.methods.steering_sets import english_sets, load_contrast_pairs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_classifier(folder: Path, labels: dict[int, str]) -> Path:
    """A tiny random RoBERTa sequence classifier with ``labels``, saved like a hub model."""
    tokenizer = make_tokenizer()
    config = transformers.RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=0,
        eos_token_id=0,
        num_labels=len(labels),
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    torch.manual_seed(0)
    model = transformers.RobertaForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_classifier(tmp_path_factory.mktemp("clf"), {0: "neutral", 1: "toxic"})


def test_lexicon_scorer_counts_the_share_of_lexicon_words():
    tox = LexiconScorer("toxicity")
    scores = tox.score(["the stupid dog", "The dog, you idiot.", "", "a quiet lamp"])
    np.testing.assert_allclose(scores, [1 / 3, 1 / 4, 0.0, 0.0])
    formal = LexiconScorer("formality")
    np.testing.assert_allclose(formal.score(["Furthermore, the dog duly ran. yeah lol"]), [2 / 7])
    assert tox.describe() == {"attribute": "toxicity", "kind": "lexicon"}


def test_unknown_attribute_and_kind_are_refused():
    with pytest.raises(ValueError, match="unknown attribute 'sarcasm'"):
        LexiconScorer("sarcasm")
    with pytest.raises(ValueError, match="unknown scorer kind 'magic'"):
        resolve_kind("magic", "organism")
    with pytest.raises(ValueError, match="unknown scorer key"):
        make_scorer("toxicity", {"kind": "lexicon", "threshold": 0.5})


def test_auto_picks_the_lexicon_for_organisms_and_a_classifier_otherwise():
    assert resolve_kind("auto", "organism") == "lexicon"
    assert resolve_kind("auto", "hub") == "classifier"
    assert resolve_kind("auto", "local") == "classifier"
    assert resolve_kind("lexicon", "hub") == "lexicon"
    assert isinstance(make_scorer("formality", {"kind": "auto"}), LexiconScorer)


def test_classifier_scorer_is_the_softmax_probability_of_the_label(classifier_dir):
    scorer = ClassifierScorer("toxicity", classifier_dir, "TOXIC", device="cpu", batch_size=2)
    assert scorer.label == "toxic" and scorer.label_index == 1
    texts = ["The cat sat on the mat.", "A man is sitting on a roof.", "Paris"]
    scores = scorer.score(texts)
    tokenizer = transformers.AutoTokenizer.from_pretrained(classifier_dir)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(classifier_dir)
    model.eval()
    with torch.no_grad():
        expected = [
            float(torch.softmax(model(**tokenizer([t], return_tensors="pt")).logits, -1)[0, 1])
            for t in texts
        ]
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert np.all((scores >= 0) & (scores <= 1))
    described = scorer.describe()
    assert described["kind"] == "classifier" and described["classifier"] == str(classifier_dir)


def test_make_scorer_builds_the_configured_classifier(classifier_dir):
    spec = {"kind": "auto", "classifier": str(classifier_dir), "label": "toxic", "batch_size": 4}
    scorer = make_scorer("toxicity", spec, model_source="hub", device="cpu")
    assert isinstance(scorer, ClassifierScorer) and scorer.batch_size == 4


def test_a_missing_label_names_the_labels_there_are(classifier_dir):
    with pytest.raises(ValueError, match=r"no label 'formal' \(its labels: neutral, toxic\)"):
        ClassifierScorer("formality", classifier_dir, "formal", device="cpu")


def test_a_one_output_ranker_scores_with_the_sigmoid(tmp_path):
    folder = make_classifier(tmp_path / "ranker", {0: "formality"})
    scorer = ClassifierScorer("formality", folder, "formal", device="cpu")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        logit = model(**tokenizer(["Paris"], return_tensors="pt")).logits[0, 0]
    np.testing.assert_allclose(scorer.score(["Paris"]), [float(torch.sigmoid(logit))], atol=1e-5)


def test_an_unreachable_hub_classifier_fails_with_one_clear_line(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ScorerLoadError) as caught:
        make_scorer("toxicity", {"kind": "classifier"}, device="cpu")
    message = str(caught.value)
    assert "\n" not in message
    assert "s-nlp/roberta_toxicity_classifier" in message
    assert "cannot be reached" in message and "kind: lexicon" in message
    assert isinstance(caught.value, ModelLoadError)  # scripts catch ModelLoadError


def test_a_missing_local_classifier_folder_is_named(tmp_path):
    with pytest.raises(ScorerLoadError, match="no such folder"):
        ClassifierScorer("toxicity", tmp_path / "nowhere" / "clf", "toxic", device="cpu")


# ------------------------------------------------------------------ offline (alt-profanity-check)
@pytest.fixture
def offline_toxicity() -> OfflineScorer:
    pytest.importorskip("profanity_check", reason="the scorers extra is not installed")
    return make_scorer("toxicity", {"kind": "offline"}, model_source="local")


def test_the_offline_scorer_ranks_an_insult_above_a_neutral_sentence(offline_toxicity):
    insult, neutral, rude = offline_toxicity.score(
        ["Shut up, you stupid idiot.", "The train leaves at nine.", "Your plan is garbage."]
    )
    assert insult > 0.9 and neutral < 0.1 and neutral < rude
    assert offline_toxicity.score([]).shape == (0,)
    described = offline_toxicity.describe()
    assert described["kind"] == "offline" and described["package"] == "alt-profanity-check"
    assert described["version"]
    # The shipped English toxicity pairs: the rude side outscores the neutral side of most pairs.
    pairs = load_contrast_pairs(english_sets().attribute_sets)["toxicity"]
    rude_side = offline_toxicity.score([p.positive for p in pairs])
    calm_side = offline_toxicity.score([p.negative for p in pairs])
    assert np.mean(rude_side > calm_side) > 0.9
    assert rude_side.mean() - calm_side.mean() > 0.6


def test_offline_is_toxicity_only_and_a_missing_package_says_how_to_install(monkeypatch):
    assert resolve_kind("offline", "hub") == "offline"
    with pytest.raises(ValueError, match="kind offline scores toxicity only, not formality"):
        make_scorer("formality", {"kind": "offline"})
    monkeypatch.setitem(__import__("sys").modules, "profanity_check", None)  # not importable
    with pytest.raises(ScorerLoadError) as caught:
        make_scorer("toxicity", {"kind": "offline"})
    assert str(caught.value) == (
        "the offline toxicity scorer needs the alt-profanity-check package: "
        "pip install 'actspace[scorers]'"
    )

    # ... and a configuration that asks for it is refused before any job runs.
    def scorers(attribute: str) -> dict:
        return {"experiments": {"behavior_edit": {"scorers": {attribute: {"kind": "offline"}}}}}

    with pytest.raises(ConfigError, match=r"scorers.toxicity.kind: needs the profanity_check"):
        resolve_config(scorers("toxicity"))
    with pytest.raises(ConfigError, match=r"formality.kind: \"offline\" is not allowed"):
        resolve_config(scorers("formality"))
