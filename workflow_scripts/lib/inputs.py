"""Input checks: a missing file or an empty or malformed table fails with the file and the problem named, before the
stage's work. Standard library at import (pandas only inside ``read_table``): ``rules/common.smk`` uses
``require_file`` at parse time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def read_table(path: str | os.PathLike, columns: tuple[str, ...], what: str) -> Any:
    """Read a parquet (or ``.csv``) table, failing with the file and the problem named when columns are missing or it
    is empty."""
    import pandas as pd

    df = pd.read_csv(path) if str(path).endswith(".csv") else pd.read_parquet(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (has {list(df.columns)})")
    if df.empty:
        raise ValueError(f"{path}: no {what}")
    return df


def require_file(path: str | os.PathLike, what: str, hint: str = "") -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {p}" + (f" ({hint})" if hint else ""))
    return p
