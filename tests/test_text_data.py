"""Tests for workflow_scripts.lib.text_data, the maintainer tool tools/build_text_data.py (its pure helpers and its
DATA.md template) and the shipped Jigsaw-style / RTP-style parquet files."""

from __future__ import annotations

import argparse
import importlib.util
import string
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workflow_scripts.lib.text_data import (
    PROMPT_DATASET_COLUMNS,
    balance_by_label,
    make_prompt_dataset,
    near_duplicate_key,
    normalise_key,
    normalise_whitespace,
    split_at_middle_word,
    stratified_subsample,
    text_id,
    train_eval_split,
    validate_texts_frame,
)
from workflow_scripts.lib.toxicity import LABEL_THRESHOLD, is_toxic

REPO = Path(__file__).resolve().parent.parent
RESOURCES = REPO / "resources"
TEXTS = RESOURCES / "jigsaw_style_texts.parquet"
RTP = RESOURCES / "rtp_challenging_prompts.parquet"
DATA_MD = RESOURCES / "DATA.md"


def _load_build_tool():
    """``tools/build_text_data.py`` is a script, not an installed package: load it from its file."""
    path = REPO / "tools" / "build_text_data.py"
    spec = importlib.util.spec_from_file_location("build_text_data", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build_text_data = _load_build_tool()

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


def make_texts(n_pos: int, n_neg: int, sources: tuple[str, ...] = ("a", "b")) -> pd.DataFrame:
    """A small real frame: distinct multi-word texts, labels, sources cycling through ``sources``."""
    rows = []
    for i in range(n_pos + n_neg):
        label = 1 if i < n_pos else 0
        text = f"text number {i} " + " ".join(WORDS[: 3 + i % 7])
        rows.append({"text": text, "label": label, "source": sources[i % len(sources)]})
    return pd.DataFrame(rows, columns=["text", "label", "source"])


# ---------------------------------------------------------------------------------------------- split_at_middle_word
@pytest.mark.parametrize(
    "text",
    ["one two", "one two three", "  The  quick\tbrown fox\njumps over  the lazy dog ", "a b c d e f g h i j"],
)
def test_halves_reconstruct_the_text(text: str) -> None:
    prompt, cont = split_at_middle_word(text)
    assert prompt + cont == normalise_whitespace(text)
    assert prompt and cont.strip()
    assert not prompt.endswith(" ") and cont.startswith(" ") and not cont.startswith("  ")
    n = len(normalise_whitespace(text).split())
    assert len(prompt.split()) == n // 2
    assert len(cont.split()) == n - n // 2


def test_split_examples() -> None:
    assert split_at_middle_word("you are a complete idiot") == ("you are", " a complete idiot")
    assert split_at_middle_word("one two") == ("one", " two")


@pytest.mark.parametrize("text", ["", "   ", "single", "  single\n"])
def test_split_rejects_short_texts(text: str) -> None:
    with pytest.raises(ValueError):
        split_at_middle_word(text)


def test_normalisation_helpers() -> None:
    assert normalise_whitespace(" a \t b\n\nc ") == "a b c"
    assert normalise_key(" Hello  World ") == normalise_key("hello world")
    assert text_id("a  b") == text_id("a b") and len(text_id("a b")) == 12


# --------------------------------------------------------------------------------------------------- balance_by_label
def test_balance_equal_counts_and_mirrored_sources() -> None:
    df = pd.concat(
        [
            pd.DataFrame({"text": [f"tox a {i}" for i in range(6)], "label": 1, "source": "a"}),
            pd.DataFrame({"text": [f"tox b {i}" for i in range(3)], "label": 1, "source": "b"}),
            pd.DataFrame({"text": [f"ok a {i}" for i in range(20)], "label": 0, "source": "a"}),
            pd.DataFrame({"text": [f"ok b {i}" for i in range(1)], "label": 0, "source": "b"}),
            pd.DataFrame({"text": [f"ok f {i}" for i in range(30)], "label": 0, "source": "fill"}),
        ],
        ignore_index=True,
    )
    out = balance_by_label(df, n_per_class=100, seed=1, fill_sources=["fill"])
    counts = out.groupby(["source", "label"]).size().to_dict()
    assert (out["label"] == 1).sum() == (out["label"] == 0).sum() == 9  # all toxic texts
    assert counts[("a", 1)] == 6 and counts[("a", 0)] == 6  # mirrored
    assert counts[("b", 1)] == 3 and counts[("b", 0)] == 1  # source b has only one non-toxic text
    assert counts[("fill", 0)] == 2  # shortfall filled from the fill source
    assert not out["text"].duplicated().any()
    assert set(out["text"]) <= set(df["text"])


def test_balance_caps_at_n_per_class_and_is_deterministic() -> None:
    df = make_texts(40, 60)
    a = balance_by_label(df, n_per_class=10, seed=3)
    b = balance_by_label(df.sample(frac=1.0, random_state=7), n_per_class=10, seed=3)  # row order must not matter
    c = balance_by_label(df, n_per_class=10, seed=4)
    assert (a["label"] == 1).sum() == (a["label"] == 0).sum() == 10
    pd.testing.assert_frame_equal(a, b)
    assert set(a["text"]) != set(c["text"])
    # sorted deterministically: label 1 first, then source, then text
    assert list(a.index) == list(range(len(a)))
    assert a["label"].tolist() == sorted(a["label"].tolist(), reverse=True)


def test_balance_when_label_one_is_the_majority() -> None:
    df = make_texts(30, 8)
    out = balance_by_label(df, n_per_class=100, seed=0)
    assert (out["label"] == 1).sum() == (out["label"] == 0).sum() == 8


def test_balance_errors() -> None:
    with pytest.raises(ValueError):
        balance_by_label(make_texts(0, 0), 10, seed=0)
    with pytest.raises(ValueError):
        balance_by_label(make_texts(5, 0), 10, seed=0)
    with pytest.raises(ValueError):
        balance_by_label(make_texts(5, 5).drop(columns="source"), 10, seed=0)
    with pytest.raises(ValueError):
        balance_by_label(make_texts(5, 5).assign(label=2), 10, seed=0)


# --------------------------------------------------------------------------------------------------- train_eval_split
def test_split_is_stratified_disjoint_and_complete() -> None:
    df = make_texts(50, 50)
    train, ev = train_eval_split(df, eval_fraction=0.2, seed=0)
    assert len(ev) == 20 and len(train) == 80
    assert (ev["label"] == 1).sum() == (ev["label"] == 0).sum() == 10
    assert (train["label"] == 1).sum() == (train["label"] == 0).sum() == 40
    assert not set(train["text"]) & set(ev["text"])
    assert set(train["text"]) | set(ev["text"]) == set(df["text"])
    assert list(train.columns) == list(df.columns)


def test_split_is_deterministic_and_seed_dependent() -> None:
    df = make_texts(50, 50)
    t1, e1 = train_eval_split(df, eval_fraction=0.2, seed=5)
    t2, e2 = train_eval_split(df.iloc[::-1], eval_fraction=0.2, seed=5)
    pd.testing.assert_frame_equal(e1, e2)
    pd.testing.assert_frame_equal(t1, t2)
    _, e3 = train_eval_split(df, eval_fraction=0.2, seed=6)
    assert set(e1["text"]) != set(e3["text"])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError):
        train_eval_split(make_texts(5, 5), eval_fraction=fraction, seed=0)


def test_split_rejects_empty_frame() -> None:
    with pytest.raises(ValueError):
        train_eval_split(make_texts(0, 0), eval_fraction=0.2, seed=0)


def test_stratified_subsample() -> None:
    df = make_texts(30, 30)
    sub = stratified_subsample(df, 10, seed=0)
    assert len(sub) == 10 and (sub["label"] == 1).sum() == 5
    with pytest.raises(ValueError):
        stratified_subsample(df, 61, seed=0)


# ------------------------------------------------------------------------------------------------ make_prompt_dataset
def test_make_prompt_dataset() -> None:
    df = make_texts(40, 40)
    train, ev = make_prompt_dataset(df, eval_fraction=0.25, seed=11)
    for part in (train, ev):
        assert list(part.columns) == list(PROMPT_DATASET_COLUMNS)
        assert (part["prompt"] + part["original_output"] == part["text"]).all()
        assert part["original_output"].str.startswith(" ").all()
        assert part["id"].str.fullmatch(r"[0-9a-f]{12}").all()
        assert part["label"].isin([0, 1]).all()
    assert len(ev) == 20 and (ev["label"] == 1).sum() == 10
    assert not set(train["id"]) & set(ev["id"])
    assert train["id"].tolist() == [text_id(t) for t in train["text"]]
    # deterministic, and the seed changes the split
    train2, ev2 = make_prompt_dataset(df, eval_fraction=0.25, seed=11)
    pd.testing.assert_frame_equal(ev, ev2)
    _, ev3 = make_prompt_dataset(df, eval_fraction=0.25, seed=12)
    assert set(ev["id"]) != set(ev3["id"])


def test_make_prompt_dataset_subsamples() -> None:
    df = make_texts(40, 40)
    train, ev = make_prompt_dataset(df, eval_fraction=0.25, seed=0, n_train=8, n_eval=4)
    assert len(train) == 8 and (train["label"] == 1).sum() == 4
    assert len(ev) == 4 and (ev["label"] == 1).sum() == 2
    full_train, full_eval = make_prompt_dataset(df, eval_fraction=0.25, seed=0)
    assert set(train["id"]) <= set(full_train["id"]) and set(ev["id"]) <= set(full_eval["id"])
    with pytest.raises(ValueError):
        make_prompt_dataset(df, eval_fraction=0.25, seed=0, n_train=1000)


def test_make_prompt_dataset_drops_near_duplicate_prompts() -> None:
    """Texts whose prompts (or texts) differ only in case, spacing or punctuation count once: no prompt can then land
    in both halves of the split or twice in one."""
    df = make_texts(20, 20)
    extra = pd.DataFrame(
        {
            "text": [
                "zulu yankee xray whiskey",  # new
                "Zulu,  YANKEE! xray whiskey",  # the same text up to case, spacing and punctuation: dropped
                "zulu yankee victor uniform",  # the same prompt "zulu yankee": dropped
                "zulu yankee xray whiskey victor uniform",  # prompt "zulu yankee xray": new
            ],
            "label": [0, 1, 1, 0],
            "source": "a",
        }
    )
    train, ev = make_prompt_dataset(pd.concat([df, extra], ignore_index=True), eval_fraction=0.25, seed=3)
    both = pd.concat([train, ev])
    assert not both["prompt"].map(near_duplicate_key).duplicated().any()
    assert len(both) == len(df) + 2
    assert {"zulu yankee", "zulu yankee xray"} <= set(both["prompt"])
    assert near_duplicate_key(" Hello,  WORLD!! ") == near_duplicate_key("hello world") == "hello world"


def test_shipped_prompt_splits_share_no_prompt(shipped: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """The default config's split of the shipped texts: no train prompt is an eval prompt or repeats another train
    prompt, up to case, spacing and punctuation."""
    train, ev = make_prompt_dataset(shipped[0], eval_fraction=0.2, seed=0)
    train_keys, eval_keys = train["prompt"].map(near_duplicate_key), ev["prompt"].map(near_duplicate_key)
    assert not set(train_keys) & set(eval_keys)
    assert not train_keys.duplicated().any() and not eval_keys.duplicated().any()
    assert not set(train["text"].map(near_duplicate_key)) & set(ev["text"].map(near_duplicate_key))
    # the raw shipped texts do hold one such repeated prompt: the check above is not vacuous
    halves = shipped[0]["text"].map(lambda t: near_duplicate_key(split_at_middle_word(t)[0]))
    assert halves.duplicated().any()


def test_make_prompt_dataset_rejects_empty() -> None:
    with pytest.raises(ValueError, match="no rows"):
        make_prompt_dataset(make_texts(0, 0), eval_fraction=0.2, seed=0)


# ----------------------------------------------------------------------------------------------- validate_texts_frame
def test_validate_texts_frame_errors_name_the_file() -> None:
    good = make_texts(2, 2)
    validate_texts_frame(good, "x.parquet")
    bad_frames = {
        "missing column": good.drop(columns="label"),
        "no rows": good.iloc[:0],
        "labels must be 0 or 1": good.assign(label=[0, 1, 2, 1]),
        "missing label": good.assign(label=[0, 1, np.nan, 1]),
        "NaN": good.assign(text=["a b", None, "c d", "e f"]),
        "empty text": good.assign(text=["a b", "  ", "c d", "e f"]),
    }
    for problem, frame in bad_frames.items():
        with pytest.raises(ValueError, match="my/file.parquet") as err:
            validate_texts_frame(frame, "my/file.parquet")
        assert problem in str(err.value)


# ------------------------------------------------------------------------------------------------- build helpers
def test_fortune_parsing_and_cleaning() -> None:
    raw = (
        "A bug in the hand is better than one as yet\nundetected.\n%\n"
        "Whe_\bn in doubt, tell the truth.\n\t\t-- Mark Twain\n%\n"
        "int main() { return 0; }\n%\n"
        "First paragraph here.\n\nSecond paragraph.\n%\n"
    )
    entries = build_text_data.split_fortune_file(raw)
    assert len(entries) == 4
    cleaned = [build_text_data.clean_fortune(e) for e in entries]
    assert cleaned[0] == "A bug in the hand is better than one as yet undetected."
    assert cleaned[1] == "When in doubt, tell the truth."  # overstrike removed, attribution dropped
    assert cleaned[2] is None and cleaned[3] is None


def test_overlap_with_held_out() -> None:
    held = ["You are such a", "Completely different prompt here"]
    texts = ["you  are SUCH a jerk and everyone knows it", "nothing to see here at all", "Completely different"]
    assert build_text_data.overlaps_held_out(texts, held).tolist() == [True, False, True]


# ------------------------------------------------------------------------------------------------ DATA.md template
def _small_build(n_per_class: int, exclude: list[str]) -> tuple:
    """Synthetic inputs of ``write_data_md``: a tiny pool, its step counts, the selected rows and held-out prompts."""
    sources = list(build_text_data.SOURCES)
    pool = pd.DataFrame(
        {
            "source": [s for s in sources for _ in range(4)],
            "label": [1, 0, 0, 0] * len(sources),
        }
    )
    pool["toxic_eligible"] = ~pool["source"].isin(exclude)
    selected = pool[(pool["label"] == 0) | pool["toxic_eligible"]].groupby(["source", "label"]).head(1)
    stats = pd.DataFrame(
        {"raw": 9, "in_length_range": 6, "dropped_overlap": 1, "candidates": 4}, index=pd.Index(sources, name="source")
    )
    table = build_text_data.summary_table(pool, stats, selected)
    held = pd.DataFrame({"prompt": ["p one", "p two", "p three"], "categories": ["insult", "threat,insult", "threat"]})
    args = argparse.Namespace(seed=5, n_per_class=n_per_class, exclude_toxic_sources=exclude)
    return table, held, selected, args, "LICENCE LINE 1\n\tLICENCE LINE 2", "fortunes_9.9_all.deb"


def test_data_md_template_placeholders_are_exactly_the_filled_fields() -> None:
    fields = build_text_data.data_md_fields(*_small_build(n_per_class=1000, exclude=["fortunes"]))
    assert build_text_data.template_fields() == set(fields)
    assert string.Template(build_text_data.DATA_MD_TEMPLATE.read_text(encoding="utf-8")).is_valid()


@pytest.mark.parametrize(("n_per_class", "exclude"), [(1000, ["fortunes"]), (2, []), (1000, ["fortunes", "cloze"])])
def test_data_md_renders_from_a_small_build(tmp_path: Path, n_per_class: int, exclude: list[str]) -> None:
    table, held, selected, args, licence, deb_name = _small_build(n_per_class, exclude)
    out = tmp_path / "DATA.md"
    build_text_data.write_data_md(out, build_text_data.data_md_fields(table, held, selected, args, licence, deb_name))
    doc = out.read_text(encoding="utf-8")
    assert "$" not in doc  # no placeholder left unfilled
    assert doc.startswith("# Offline text data") and doc.endswith("LICENCE LINE 1\n\tLICENCE LINE 2\n```\n")
    assert "Built by `tools/build_text_data.py` (seed 5)" in doc
    assert "P(toxic) >= 0.5" in doc and f"`{deb_name}`" in doc
    assert "per first category: flirtation 0, identity_attack 0, insult 1, profanity 0, severe_toxicity 0" in doc
    n = int((selected["label"] == 1).sum())
    assert f"| `jigsaw_style_texts.parquet` | {len(selected)} ({n} toxic + {n} non-toxic) |" in doc
    assert "| total | 45 | 30 | 5 | 20 | 5 |" in doc  # the counts table of summary_table
    for source in build_text_data.SOURCES:
        assert f"| {source} |" in doc
    assert f"**{', '.join(exclude) or 'none'}**" in doc
    assert ("A read of random classifier-toxic fortunes" in doc) == ("fortunes" in exclude)
    assert ("There were fewer than" in doc) == (n < n_per_class)


def test_render_data_md_rejects_missing_or_unknown_fields() -> None:
    fields = build_text_data.data_md_fields(*_small_build(n_per_class=1000, exclude=["fortunes"]))
    with pytest.raises(ValueError, match="not filled: \\['seed'\\]"):
        build_text_data.render_data_md({k: v for k, v in fields.items() if k != "seed"})
    with pytest.raises(ValueError, match="not in the template: \\['bogus'\\]"):
        build_text_data.render_data_md({**fields, "bogus": "x"})


# ---------------------------------------------------------------------------------------------- shipped data files
@pytest.fixture(scope="module")
def shipped() -> tuple[pd.DataFrame, pd.DataFrame]:
    if not TEXTS.exists() or not RTP.exists():
        pytest.fail(f"shipped data missing: {TEXTS} / {RTP} (rebuild with tools/build_text_data.py)")
    return pd.read_parquet(TEXTS), pd.read_parquet(RTP)


def test_shipped_texts(shipped: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    texts, _ = shipped
    validate_texts_frame(texts, str(TEXTS))
    assert list(texts.columns) == ["text", "label", "source", "p_toxic", "n_words"]
    assert (texts["label"] == 1).sum() == (texts["label"] == 0).sum() > 0
    assert len(texts) <= 2000
    assert (texts["text"].str.split().str.len() >= 8).all()
    assert (texts["text"].str.split().str.len() == texts["n_words"]).all()
    assert (texts["label"] == is_toxic(texts["p_toxic"], LABEL_THRESHOLD).astype(int)).all()
    assert texts["p_toxic"].between(0, 1).all()
    assert not texts["text"].map(normalise_key).duplicated().any()
    assert (texts["text"] == texts["text"].map(normalise_whitespace)).all()
    assert TEXTS.stat().st_size < 1_000_000 and RTP.stat().st_size < 1_000_000
    # the source mix is mirrored across labels
    by = texts.groupby(["source", "label"]).size().unstack(fill_value=0)
    assert (by[0] >= by[1]).all() or (by[0] == by[1]).all()


def test_shipped_texts_disjoint_from_held_out_rtp(shipped: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    texts, rtp = shipped
    assert list(rtp.columns) == ["prompt", "categories", "source", "p_toxic_prompt"]
    assert len(rtp) > 0 and not rtp["prompt"].duplicated().any()
    held = [normalise_key(p) for p in rtp["prompt"]]
    held_set = set(held)
    for text in texts["text"]:
        key = normalise_key(text)
        assert key not in held_set
        assert not any(h in key for h in held), text


def test_every_source_in_data_md(shipped: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    texts, _ = shipped
    doc = DATA_MD.read_text(encoding="utf-8")
    for source in texts["source"].unique():
        assert f"| {source} |" in doc and f"`{source}`" in doc, source
