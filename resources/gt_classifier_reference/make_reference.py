"""Produce Keras reference outputs for the PyTorch port in ``workflow_scripts/lib/gt_classifier.py``.

Consumes: the extracted ``toxic-comment-classifier==0.3.0`` package (directory containing ``toxic_classifier/``), which
must be importable together with TensorFlow/Keras 3 (this script is NOT run by the pipeline; it needs TensorFlow).
Produces: ``reference_outputs.json`` next to this script, holding for every test text the six probabilities returned
by the package's own ``ToxicCommentClassifier.classify()`` (the real Keras model), the token ids produced by the
package's own pickled Keras tokenizer + ``pad_sequences``, and the pre-sigmoid logits of the output layer.

Usage (see README.md in this directory)::

    /tmp/tfvenv/bin/python resources/gt_classifier_reference/make_reference.py --package-dir /tmp/pk/tcc
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

HERE = Path(__file__).resolve().parent

_LONG_TOXIC_THEN_BENIGN = (
    "you are a fucking idiot and a stupid moron " * 5
    + "thank you for your edits to the article on the history of the city " * 10
)
_LONG_BENIGN_THEN_TOXIC = (
    "thank you for your edits to the article on the history of the city " * 10
    + "you are a fucking idiot and a stupid moron " * 5
)

TEXTS: list[str] = [
    # --- benign ---
    "Thank you for your helpful edits to the article.",
    "Hello, how are you doing today?",
    "I have added a citation to the history section; please review it when you have time.",
    "The weather in Paris is lovely in the spring.",
    "Could you explain why this paragraph was removed from the page?",
    "Great work on the new infobox, it looks much cleaner now.",
    "Please do not remove the references without discussing on the talk page first.",
    "I disagree with your interpretation of the source, but I appreciate the discussion.",
    "Welcome to Wikipedia! Here are some links to help you get started.",
    "The recipe needs two cups of flour, one egg and a pinch of salt.",
    # --- profane ---
    "What the fuck is this shit?",
    "This article is fucking garbage.",
    "Holy shit, that's amazing!",
    "Damn, I forgot my keys again.",
    "Shut the fuck up you piece of shit.",
    "fuck fuck fuck fuck fuck",
    # --- insults ---
    "You are an idiot.",
    "You're a stupid moron and nobody likes you.",
    "What a pathetic loser you are.",
    "You dumb bitch, stop editing my page.",
    "You are such an asshole.",
    "Go away, you ignorant clown.",
    # --- threats ---
    "I will kill you.",
    "I'm going to find where you live and hurt you.",
    "You should die in a fire.",
    "I will murder your whole family.",
    "Watch your back, I know where you are.",
    # --- identity hate ---
    "All Muslims are terrorists and should be deported.",
    "Gay people are disgusting.",
    "Jews control the media.",
    "You stupid nigger.",
    "Shut up faggot.",
    # --- empty / whitespace / only punctuation ---
    "",
    "   ",
    "!!!???...",
    "\t\n",
    # --- long texts (> 100 tokens): pre-truncation keeps the LAST 100 ids ---
    _LONG_TOXIC_THEN_BENIGN,
    _LONG_BENIGN_THEN_TOXIC,
    # --- punctuation-heavy ---
    "You!!! are!!! an!!! idiot!!!",
    "f.u.c.k y.o.u",
    "(idiot)[moron]{stupid}<loser>",
    "shit,shit;shit:shit/shit\\shit",
    "hello-world_foo@bar.com #wiki $100 %50 ^caret &and *star* ~tilde `tick` |pipe|",
    "It's, like, \"really\" great -- isn't it?",
    "don't can't won't I'm you're",
    # --- upper / mixed case ---
    "YOU ARE AN IDIOT",
    "THANK YOU FOR YOUR HELP",
    "FuCk YoU",
    "StUpId MoRoN",
    # --- unknown words / out of vocabulary / words with rank >= num_words ---
    "zyzzyva blockchain covid kys",
    "qwertyuiop asdfghjkl zxcvbnm",
    "wes shattering climates reaper",
    "café naïve façade über",
    "Das ist ein schöner Tag, nicht wahr?",
    "日本語のテキスト and some english",
    "You 🤬 idiot 😡",
    # --- numbers ---
    "123 456 789",
    "42",
    "In 2024 there were 1,000,000 edits.",
    "Call me at 555-1234 you moron",
    # --- mixed / borderline ---
    "I hate mondays.",
    "This is a stupid policy, but the editors are fine.",
    "Kill the process and restart the server.",
    "That band's new album is the shit.",
    "You are not an idiot, you are a very smart person.",
    "thanks, idiot",
]


def _versions() -> dict[str, str]:
    import h5py
    import keras
    import numpy
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "h5py": h5py.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--package-dir",
        default="/tmp/pk/tcc",
        help="directory containing the extracted toxic_classifier package (unzipped wheel)",
    )
    parser.add_argument("--out", default=str(HERE / "reference_outputs.json"))
    args = parser.parse_args()

    sys.path.insert(0, str(Path(args.package_dir).resolve()))
    import numpy as np
    from tensorflow.keras.models import Model
    from tensorflow.keras.preprocessing.sequence import pad_sequences
    from toxic_classifier import ToxicCommentClassifier
    from toxic_classifier.model import LIST_CLASSES, MAXLEN

    clf = ToxicCommentClassifier()
    # Sub-model up to the input of the last Dense layer, to recompute pre-sigmoid logits in float64.
    last_dense = clf.model.layers[-1]
    penultimate = Model(inputs=clf.model.inputs, outputs=last_dense.input)
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in last_dense.get_weights())

    tok = clf.tokenizer
    records = []
    for text in TEXTS:
        probs = clf.classify(text)  # the package's own public API (per text, as shipped)
        seq = tok.texts_to_sequences([text])
        padded = pad_sequences(seq, maxlen=MAXLEN)
        hidden = np.asarray(penultimate.predict(padded, verbose=0), dtype=np.float64)
        logits = (hidden @ kernel + bias)[0]
        records.append(
            {
                "text": text,
                "n_tokens": len(seq[0]),
                "padded_ids": [int(i) for i in padded[0]],
                "probs": {k: float(probs[k]) for k in LIST_CLASSES},
                "logits": {k: float(logits[i]) for i, k in enumerate(LIST_CLASSES)},
            }
        )

    out = {
        "description": (
            "Outputs of the real Keras model of toxic-comment-classifier==0.3.0 "
            "(toxic_classifier.ToxicCommentClassifier.classify), used to test workflow_scripts/lib/gt_classifier.py"
        ),
        "package": "toxic-comment-classifier==0.3.0",
        "command": (
            "/tmp/tfvenv/bin/python resources/gt_classifier_reference/make_reference.py "
            f"--package-dir {args.package_dir}"
        ),
        "versions": _versions(),
        "labels": list(LIST_CLASSES),
        "maxlen": MAXLEN,
        "tokenizer": {
            "num_words": tok.num_words,
            "lower": tok.lower,
            "split": tok.split,
            "filters": tok.filters,
            "char_level": tok.char_level,
            "oov_token": tok.oov_token,
        },
        "records": records,
    }
    # Human-diffable layout: header pretty-printed, one record per line.
    body = json.dumps({**out, "records": []}, indent=1, ensure_ascii=False)
    rows = ",\n".join("  " + json.dumps(r, ensure_ascii=False) for r in records)
    body = body.replace('"records": []', '"records": [\n' + rows + "\n ]")
    json.loads(body)  # sanity: still valid JSON
    Path(args.out).write_text(body + "\n", encoding="utf-8")
    print(f"wrote {len(records)} records to {args.out}")


if __name__ == "__main__":
    main()
