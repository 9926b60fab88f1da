"""Hugging Face hub access with one clear error when a hub id cannot be reached (e.g. offline mode, no cache).

Every place that opens a model, classifier or data set by name goes through ``from_hub``, so the paper configs (hub
ids) and the tests (local copies saved with ``save_pretrained`` / a local parquet data set) use the same code path. A
name that exists on disk is a local copy; anything else is a hub id.
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


def load_dataset_table(name: str | os.PathLike, split: str = "train", revision: str | None = None) -> Any:
    """A data set as a pandas DataFrame: a hub id (``datasets.load_dataset``) or a local file/directory of one.

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
