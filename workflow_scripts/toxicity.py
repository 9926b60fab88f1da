"""Toxicity scorers behind one interface: ``scorer.p_toxic(texts) -> np.ndarray`` of probabilities in [0, 1].

Two roles use them, deliberately with *different* classifiers as in the paper:
  * the ground-truth (GT) reward for RLHF: ``gt_bilstm`` -- the Jigsaw-trained BiLSTM of ``toxic-comment-classifier``
    ported to torch (``workflow_scripts.gt_classifier``); paper config: ``s-nlp/roberta_toxicity_classifier``;
  * the evaluation classifier for Table 1: ``profanity_check`` -- ``alt-profanity-check``'s linear model;
    paper config: ``facebook/roberta-hate-speech-dynabench-r4-target``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from workflow_scripts.common import resolve_path


class ToxicityScorer(Protocol):
    name: str

    def p_toxic(self, texts: Sequence[str]) -> np.ndarray: ...


def _check_texts(texts: Sequence[str]) -> list[str]:
    texts = list(texts)
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"toxicity scorers take strings; got {sorted(set(bad))}")
    return texts


class ProfanityCheckScorer:
    """``alt-profanity-check`` (word-level linear SVM; ~2% false-positive floor on benign text)."""

    name = "profanity_check"

    def __init__(self) -> None:
        from profanity_check import predict_prob

        self._predict_prob = predict_prob

    def p_toxic(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        if not texts:
            return np.zeros(0, dtype=np.float64)
        return np.asarray(self._predict_prob(texts), dtype=np.float64)


class GTBiLSTMScorer:
    """The ported Jigsaw BiLSTM; P(toxic) is its first ("toxic") head."""

    name = "gt_bilstm"

    def __init__(self, wheel: str) -> None:
        from workflow_scripts.gt_classifier import GTToxicityClassifier

        self.classifier = GTToxicityClassifier.from_wheel(resolve_path(wheel))

    def p_toxic(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        if not texts:
            return np.zeros(0, dtype=np.float64)
        return np.asarray(self.classifier.p_toxic(texts), dtype=np.float64)


def load_scorer(spec: Mapping[str, Any]) -> ToxicityScorer:
    """Build a scorer from its config entry, e.g. ``{"kind": "gt_bilstm", "wheel": "resources/wheels/..."}``."""
    kind = spec.get("kind")
    if kind == "profanity_check":
        return ProfanityCheckScorer()
    if kind == "gt_bilstm":
        return GTBiLSTMScorer(spec["wheel"])
    raise ValueError(f"unknown toxicity scorer kind {kind!r} (expected 'gt_bilstm' or 'profanity_check')")
