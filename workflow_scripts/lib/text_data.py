"""Pure helpers for the offline Jigsaw-style text data and the prompt data sets built from it.

The paper ("Insights from the Inverse", arXiv 2410.12491) builds its RLHF/IRL prompts from Jigsaw comments split at the
middle word: the first half is the prompt, the second half the "original output". Offline we use a stand-in set of
labelled texts (``resources/jigsaw_style_texts.parquet``, built by ``tools/build_text_data.py``). This module
holds the side-effect-free functions that build that set and turn it into prompt data sets:

* :func:`normalise_whitespace` / :func:`normalise_key` - canonical text and de-duplication key.
* :func:`split_at_middle_word` - the paper's prompt/continuation halves.
* :func:`balance_by_label` - equal number of texts per label, with the source mix of the minority class mirrored on
  the other class so that the label does not simply encode the source (style) of a text.
* :func:`train_eval_split` - seeded, label-stratified, disjoint split.
* :func:`make_prompt_dataset` - halves + split + optional stratified subsampling (for tiny test configurations).
* :func:`validate_texts_frame` - checks a texts frame and names the file in the error.

Conventions: texts are whitespace-normalised (runs of whitespace collapsed to one space, stripped). The continuation
half starts with a single leading space and the prompt half has no trailing space, so ``prompt + original_output``
reconstructs the normalised text exactly.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "REQUIRED_TEXT_COLUMNS",
    "PROMPT_DATASET_COLUMNS",
    "normalise_whitespace",
    "normalise_key",
    "near_duplicate_key",
    "text_id",
    "split_at_middle_word",
    "balance_by_label",
    "train_eval_split",
    "stratified_subsample",
    "make_prompt_dataset",
    "validate_texts_frame",
]

REQUIRED_TEXT_COLUMNS: tuple[str, ...] = ("text", "label", "source")
PROMPT_DATASET_COLUMNS: tuple[str, ...] = ("id", "prompt", "original_output", "text", "label", "source")

_WS = re.compile(r"\s+")


def normalise_whitespace(text: str) -> str:
    """Collapse every run of whitespace (spaces, tabs, newlines) to one space and strip both ends."""
    return _WS.sub(" ", text).strip()


def normalise_key(text: str) -> str:
    """De-duplication / overlap key: whitespace-normalised and case-folded text."""
    return normalise_whitespace(text).casefold()


_NON_ALNUM = re.compile(r"[\W_]+")


def near_duplicate_key(text: str) -> str:
    """Near-duplicate key: the :func:`normalise_key` text with every run of non-alphanumeric characters
    (punctuation, quotes, underscores, whitespace) turned into one space, so texts differing only in case,
    spacing or punctuation share a key."""
    return _NON_ALNUM.sub(" ", normalise_key(text)).strip()


def text_id(text: str) -> str:
    """Stable 12-hex-digit id of a text: the first 12 hex digits of the SHA-1 of its normalised UTF-8 form."""
    return hashlib.sha1(normalise_whitespace(text).encode("utf-8")).hexdigest()[:12]


def split_at_middle_word(text: str) -> tuple[str, str]:
    """Split a text at its middle word into ``(prompt, original_output)``, as the paper does for Jigsaw comments.

    The text is whitespace-normalised and split on spaces into ``n`` words. ``prompt`` is the first ``n // 2`` words
    joined by single spaces (no trailing space); ``original_output`` is the remaining words joined by single spaces
    *with one leading space*, so ``prompt + original_output == normalise_whitespace(text)``. Both halves are
    non-empty; for odd ``n`` the continuation gets the extra word.

    Raises:
        ValueError: if the text has fewer than two words.
    """
    words = normalise_whitespace(text).split(" ") if text is not None else []
    words = [w for w in words if w]
    if len(words) < 2:
        raise ValueError(f"cannot split a text with {len(words)} word(s) at the middle word: {text!r}")
    mid = len(words) // 2
    return " ".join(words[:mid]), " " + " ".join(words[mid:])


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _sample_positions(n_available: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct positions out of ``range(n_available)``, in random order."""
    return rng.permutation(n_available)[:n]


def _sorted_for_sampling(df: pd.DataFrame) -> pd.DataFrame:
    """Put a frame in a canonical order so that seeded sampling does not depend on the input row order."""
    if "text" in df.columns:
        return df.sort_values("text", kind="mergesort").reset_index(drop=True)
    return df.reset_index(drop=True)


def balance_by_label(
    df: pd.DataFrame,
    n_per_class: int,
    seed: int,
    label_col: str = "label",
    source_col: str = "source",
    fill_sources: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Sample the same number of texts for label 0 and label 1, mirroring the source mix across labels.

    ``n = min(n_per_class, #label-1 rows, #label-0 rows)`` texts are taken per label. The *reference* class is the
    one with fewer rows (label 1 on a tie): ``n`` of its rows are sampled at random (all of them when it has exactly
    ``n``). For the other class, from each source ``s`` as many rows are sampled as the reference sample holds from
    ``s`` (as far as that source allows); any shortfall is filled at random from the other class's remaining rows,
    first from ``fill_sources`` (pooled) and then from any source.

    The result is deterministic for a given ``seed`` and does not depend on the input row order (rows are put in
    ``text`` order before sampling when a ``text`` column exists). It is sorted by label (1 first), source and text.

    Raises:
        ValueError: on an empty frame, missing columns, labels other than 0/1, or ``n_per_class < 1``.
    """
    for col in (label_col, source_col):
        if col not in df.columns:
            raise ValueError(f"balance_by_label: missing column {col!r}")
    if len(df) == 0:
        raise ValueError("balance_by_label: empty frame")
    if n_per_class < 1:
        raise ValueError(f"balance_by_label: n_per_class must be >= 1, got {n_per_class}")
    labels = df[label_col]
    if labels.isna().any() or not set(labels.astype(int).unique()) <= {0, 1}:
        raise ValueError(f"balance_by_label: column {label_col!r} must hold only 0/1")

    data = _sorted_for_sampling(df)
    rng = _rng(seed)
    counts = data[label_col].astype(int).value_counts()
    n_pos, n_neg = int(counts.get(1, 0)), int(counts.get(0, 0))
    n = min(n_per_class, n_pos, n_neg)
    if n == 0:
        raise ValueError(f"balance_by_label: need both labels, got {n_pos} with label 1 and {n_neg} with label 0")
    ref_label = 1 if n_pos <= n_neg else 0
    ref = data[data[label_col].astype(int) == ref_label]
    other = data[data[label_col].astype(int) != ref_label]

    ref_sel = ref.iloc[np.sort(_sample_positions(len(ref), n, rng))]
    quota = ref_sel[source_col].value_counts()

    chosen: list[int] = []  # index labels in `data`
    for source in sorted(quota.index, key=str):
        cand = other.index[other[source_col] == source]
        k = min(int(quota[source]), len(cand))
        chosen.extend(cand[np.sort(_sample_positions(len(cand), k, rng))].tolist())
    shortfall = n - len(chosen)
    if shortfall > 0:
        taken = set(chosen)
        remaining = other.loc[[i for i in other.index if i not in taken]]
        preferred = remaining[remaining[source_col].isin(list(fill_sources or []))]
        pick = preferred.index[_sample_positions(len(preferred), min(shortfall, len(preferred)), rng)].tolist()
        chosen.extend(pick)
        shortfall -= len(pick)
        if shortfall > 0:
            rest = remaining.drop(index=pick)
            chosen.extend(rest.index[_sample_positions(len(rest), shortfall, rng)].tolist())

    out = pd.concat([ref_sel, data.loc[chosen]])
    sort_cols = [label_col, source_col] + (["text"] if "text" in out.columns else [])
    asc = [False] + [True] * (len(sort_cols) - 1)
    return out.sort_values(sort_cols, ascending=asc, kind="mergesort").reset_index(drop=True)


def _check_fraction(eval_fraction: float) -> None:
    if not 0.0 < float(eval_fraction) < 1.0:
        raise ValueError(f"eval_fraction must be strictly between 0 and 1, got {eval_fraction}")


def train_eval_split(
    df: pd.DataFrame, eval_fraction: float, seed: int, label_col: str = "label"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded split into disjoint ``(train_df, eval_df)``, stratified by label.

    Within each label, ``round(n_label * eval_fraction)`` rows (at least one when the label has >= 2 rows) go to the
    evaluation half and the rest to training, so a balanced frame gives two balanced halves. Rows are put in ``text``
    order before shuffling, so the split depends only on the rows and the seed, not on their order. Both halves keep
    the input columns, are sorted by label (1 first) and text, and have a fresh index.

    Raises:
        ValueError: on an empty frame, a missing label column, or ``eval_fraction`` outside (0, 1), or if either
            half would be empty.
    """
    _check_fraction(eval_fraction)
    if len(df) == 0:
        raise ValueError("train_eval_split: empty frame")
    if label_col not in df.columns:
        raise ValueError(f"train_eval_split: missing column {label_col!r}")
    data = _sorted_for_sampling(df)
    rng = _rng(seed)
    eval_idx: list[int] = []
    for label in sorted(data[label_col].unique()):
        idx = data.index[data[label_col] == label]
        k = int(round(len(idx) * eval_fraction))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        eval_idx.extend(idx[_sample_positions(len(idx), k, rng)].tolist())
    eval_mask = data.index.isin(eval_idx)
    train, evaluation = data[~eval_mask], data[eval_mask]
    if len(train) == 0 or len(evaluation) == 0:
        raise ValueError(
            f"train_eval_split: {len(data)} rows with eval_fraction={eval_fraction} leave an empty half "
            f"(train {len(train)}, eval {len(evaluation)})"
        )
    return _sort_by_label_text(train, label_col), _sort_by_label_text(evaluation, label_col)


def _sort_by_label_text(df: pd.DataFrame, label_col: str) -> pd.DataFrame:
    cols = [label_col] + (["text"] if "text" in df.columns else [])
    asc = [False] + [True] * (len(cols) - 1)
    return df.sort_values(cols, ascending=asc, kind="mergesort").reset_index(drop=True)


def stratified_subsample(df: pd.DataFrame, n: int, seed: int, label_col: str = "label") -> pd.DataFrame:
    """Seeded subsample of ``n`` rows with the label shares of ``df`` kept (largest-remainder allocation).

    Returns all rows (re-sorted) when ``n == len(df)``.

    Raises:
        ValueError: if ``n < 1`` or ``n > len(df)``.
    """
    if n < 1 or n > len(df):
        raise ValueError(f"stratified_subsample: cannot take {n} rows from a frame of {len(df)}")
    data = _sorted_for_sampling(df)
    rng = _rng(seed)
    groups = {label: data.index[data[label_col] == label] for label in sorted(data[label_col].unique())}
    exact = {label: n * len(idx) / len(data) for label, idx in groups.items()}
    alloc = {label: int(np.floor(x)) for label, x in exact.items()}
    by_remainder = sorted(groups, key=lambda lab: (-(exact[lab] - alloc[lab]), lab))
    for label in by_remainder[: n - sum(alloc.values())]:
        alloc[label] += 1
    keep: list[int] = []
    for label, idx in groups.items():
        keep.extend(idx[_sample_positions(len(idx), alloc[label], rng)].tolist())
    return _sort_by_label_text(data.loc[sorted(keep)], label_col)


def make_prompt_dataset(
    texts_df: pd.DataFrame,
    eval_fraction: float,
    seed: int,
    n_train: int | None = None,
    n_eval: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Turn a labelled texts frame into ``(train, eval)`` prompt data sets.

    Each text is whitespace-normalised and split by :func:`split_at_middle_word` (a frame that already has ``prompt``
    and ``original_output`` columns keeps that split, and ``text`` becomes their concatenation); the frame is split by
    :func:`train_eval_split` (stratified by label, seeded) and, when ``n_train`` / ``n_eval`` are given, each half is
    reduced to that many rows by :func:`stratified_subsample` (seeded, label shares kept). Texts with fewer than two
    words are dropped, and so is every text whose text or *prompt* repeats an earlier one up to case, spacing and
    punctuation (:func:`near_duplicate_key`): no prompt is then in both halves or twice in one. Output
    columns: ``id`` (first 12 hex digits of the SHA-1 of the text), ``prompt``, ``original_output`` (with its
    leading space), ``text``, ``label`` (int) and ``source``.

    Raises:
        ValueError: if the frame fails :func:`validate_texts_frame`, if the split fails, or if ``n_train`` /
            ``n_eval`` exceed the size of their half.
    """
    validate_texts_frame(texts_df, "<texts_df>")
    _check_fraction(eval_fraction)
    data = pd.DataFrame(
        {
            "text": texts_df["text"].map(normalise_whitespace),
            "label": texts_df["label"].astype(int).to_numpy(),
            "source": texts_df["source"].astype(str).to_numpy(),
        }
    )
    presplit = {"prompt", "original_output"} <= set(texts_df.columns)
    if presplit:  # a data set with its own prompt / continuation (the paper's jigsaw-long-2000) keeps its split
        data["prompt"] = texts_df["prompt"].map(normalise_whitespace).to_numpy()
        data["original_output"] = (" " + texts_df["original_output"].map(normalise_whitespace)).to_numpy()
        data["text"] = data["prompt"] + data["original_output"]
    data = data[data["text"].str.count(" ") >= 1].drop_duplicates("text").reset_index(drop=True)
    if not presplit:
        halves = data["text"].map(split_at_middle_word)
        data["prompt"] = [h[0] for h in halves]
        data["original_output"] = [h[1] for h in halves]
    for column in ("text", "prompt"):  # the first occurrence of each (near-)duplicate text or prompt is kept
        data = data[~data[column].map(near_duplicate_key).duplicated()].reset_index(drop=True)
    data["id"] = data["text"].map(text_id)
    train, evaluation = train_eval_split(data, eval_fraction=eval_fraction, seed=seed)
    if n_train is not None:
        train = stratified_subsample(train, n_train, seed=seed + 1)
    if n_eval is not None:
        evaluation = stratified_subsample(evaluation, n_eval, seed=seed + 2)
    cols = list(PROMPT_DATASET_COLUMNS)
    return train[cols].reset_index(drop=True), evaluation[cols].reset_index(drop=True)


def validate_texts_frame(df: pd.DataFrame, path: str) -> None:
    """Check a labelled texts frame; raise ``ValueError`` naming ``path`` and the problem.

    Requirements: columns ``text``, ``label``, ``source`` present; at least one row; no missing or blank text;
    labels are 0/1 (integers or integer-valued) with no missing values.
    """
    missing = [c for c in REQUIRED_TEXT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    if len(df) == 0:
        raise ValueError(f"{path}: no rows")
    text = df["text"]
    if text.isna().any():
        raise ValueError(f"{path}: {int(text.isna().sum())} row(s) with missing (NaN) text")
    if not all(isinstance(t, str) for t in text):
        raise ValueError(f"{path}: column 'text' must hold strings")
    blank = text.str.strip() == ""
    if blank.any():
        raise ValueError(f"{path}: {int(blank.sum())} row(s) with empty text")
    label = df["label"]
    if label.isna().any():
        raise ValueError(f"{path}: {int(label.isna().sum())} row(s) with missing label")
    bad = sorted({repr(v) for v in label if v not in (0, 1) or isinstance(v, str)})
    if bad:
        raise ValueError(f"{path}: labels must be 0 or 1, found {bad[:5]}")
    if df["source"].isna().any():
        raise ValueError(f"{path}: {int(df['source'].isna().sum())} row(s) with missing source")
