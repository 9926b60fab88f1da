"""The one input check for texts going into a classifier (the GT BiLSTM's tokenizer, the evaluation scorers)."""

from __future__ import annotations

from collections.abc import Iterable


def check_texts(texts: Iterable[str]) -> list[str]:
    """The one input check for texts going into a classifier: a sequence of ``str``, never one string or bytes."""
    if isinstance(texts, str | bytes):
        raise TypeError("texts must be a sequence of strings, not a single string/bytes object")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] must be str, got {type(t).__name__}")
    return texts
