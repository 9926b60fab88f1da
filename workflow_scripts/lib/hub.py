"""Hugging Face hub access with one clear error when a hub id cannot be reached (e.g. offline mode, no cache).

Every place that opens a model, classifier or data set by name goes through ``from_hub``, so the paper configs (hub
ids) and the tests (local copies saved with ``save_pretrained`` / a local parquet data set) use the same code path. A
name that exists on disk is a local copy; anything else is a hub id.

Compute nodes are often offline: ``hub_assets`` lists every hub id a config names, the local rule ``fetch_hub_assets``
(login node) downloads them once into the Hugging Face cache with ``fetch_assets``, and every job that depends on it
runs with ``go_offline()``. Module level imports are standard library only: ``rules/common.smk`` calls
``hub_assets`` while Snakemake parses the workflow.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from workflow_scripts.lib.paths import is_local

T = TypeVar("T")
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


class HubUnavailable(RuntimeError):
    """A hub id could not be loaded: not reachable (or offline mode) and not in the local Hugging Face cache."""


def go_offline() -> None:
    """Hub libraries read only the local cache from now on (a job after ``fetch_hub_assets``)."""
    for var in OFFLINE_VARS:
        os.environ[var] = "1"
    try:
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True  # read at import time; the job may have imported it already
    except ImportError:
        pass


def offline_mode() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARS)


def from_hub(load: Callable[[], T], what: str, name: str | os.PathLike) -> T:
    """Run ``load()``; if ``name`` is a hub id that cannot be fetched, raise ``HubUnavailable`` with a one-line message.

    Errors for local copies (a broken checkpoint directory, say) are not rewritten: they are about the files.
    """
    try:
        return load()
    except OSError as err:  # transformers: OSError; datasets: ConnectionError (an OSError)
        if is_local(name):
            raise
        mode = "offline mode (HF_HUB_OFFLINE=1)" if offline_mode() else "the hub could not be reached"
        raise HubUnavailable(
            f"{what} {str(name)!r}: {mode} and it is not in the Hugging Face cache "
            f"({type(err).__name__}); run once with network to cache it, or set the config to a local copy"
        ) from err


def load_dataset_table(name: str | os.PathLike, split: str, revision: str | None = None) -> Any:
    """Split ``split`` (``data.texts_split``/``rtp_split``) of a data set as a pandas DataFrame: a hub id
    (``datasets.load_dataset``) or a local file/directory of one.

    Local ``.parquet``/``.csv``/``.json(l)`` files load through ``datasets`` too, so both take the same path.
    """
    import datasets

    path = Path(name)
    if path.is_file():
        builder = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}.get(path.suffix)
        if builder is None:
            raise ValueError(f"{path}: unsupported data file type {path.suffix!r} (parquet, csv, json, jsonl)")
        ds = datasets.load_dataset(builder, data_files={split: str(path)}, split=split)
    else:
        ds = from_hub(lambda: datasets.load_dataset(str(name), split=split, revision=revision), "data set", name)
    return ds.to_pandas()


# --------------------------------------------------------------------------------------------- fetch once
# Weights of other frameworks that hub repositories often carry; the jobs load PyTorch (safetensors or .bin) only.
SKIP_FILES = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "*.tflite", "flax_model*", "tf_model*", "rust_model*", "onnx/*"]


def hub_assets(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Every hub id a config (defaults filled in) names, as ``{kind, name, revision, split, key}``; local copies
    are left out, each id is listed once."""
    base, sft, data, gt, ev = (config[k] for k in ("base_model", "sft", "data", "gt_classifier", "evaluation"))
    pretrained = base["source"] == "pretrained"
    wanted = [
        ("model", base["name_or_path"], base["revision"], None, "base_model.name_or_path", pretrained),
        ("model", sft["import_from"], None, None, "sft.import_from", sft["source"] == "import"),
        ("model", gt.get("model"), gt.get("revision"), None, "gt_classifier.model", gt["kind"] == "hf_classifier"),
        ("model", ev["classifier"].get("model"), ev["classifier"].get("revision"), None, "evaluation.classifier.model",
         ev["classifier"]["kind"] == "hf_classifier"),
        ("dataset", data["texts"], None, data["texts_split"], "data.texts", True),
        ("dataset", data["rtp_prompts"], None, data["rtp_split"], "data.rtp_prompts", True),
    ]  # fmt: skip
    assets: list[dict[str, Any]] = []
    for kind, name, revision, split, key, used in wanted:
        if used and name and not is_local(name) and not any(a["name"] == name and a["kind"] == kind for a in assets):
            assets.append({"kind": kind, "name": name, "revision": revision, "split": split, "key": key})
    return assets


def fetch_assets(assets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Download every asset into the Hugging Face cache (models: a snapshot without other frameworks' weights; data
    sets: the split the job loads, prepared by ``datasets`` exactly as the job will load it). Returns a manifest."""
    from huggingface_hub import snapshot_download

    manifest = []
    for asset in assets:
        name, revision = asset["name"], asset["revision"]
        if asset["kind"] == "model":
            path = from_hub(
                lambda name=name, revision=revision: snapshot_download(
                    name, revision=revision, ignore_patterns=SKIP_FILES
                ),
                f"model ({asset['key']})",
                name,
            )
            manifest.append({**asset, "snapshot": str(path)})
        else:
            frame = load_dataset_table(name, asset["split"], revision)
            manifest.append({**asset, "rows": len(frame), "columns": list(map(str, frame.columns))})
    return manifest
