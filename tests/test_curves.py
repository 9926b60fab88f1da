"""tensorboard: true writes the training logs as TensorBoard event files, read back here with TensorBoard's own
reader; a missing package is named before any training."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from workflow_scripts.lib import curves
from workflow_scripts.lib.job import tensorboard_hook


def read_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_every_finite_number_becomes_a_scalar(tmp_path: Path) -> None:
    log = pd.DataFrame({"iteration": [0, 1, 2], "kl": [0.1, 0.5, np.nan], "reward_raw_mean": [0.0, 0.2, 0.3]})
    log["note"] = "text columns are skipped"
    assert curves.write_curves(log, tmp_path, "iteration", "ppo") == 5
    got = read_scalars(tmp_path)
    assert set(got) == {"ppo/kl", "ppo/reward_raw_mean"}
    assert got["ppo/reward_raw_mean"] == [(0, 0.0), (1, pytest.approx(0.2)), (2, pytest.approx(0.3))]
    assert [s for s, _ in got["ppo/kl"]] == [0, 1]  # the NaN is left out


def test_hook_of_a_training_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    metrics = tmp_path / "metrics.parquet"
    pd.DataFrame({"epoch": [0, 1], "val_pair_accuracy": [0.5, 0.75]}).to_parquet(metrics)
    smk = SimpleNamespace(
        config={"tensorboard": True}, rule="irl_train", output={"metrics": str(metrics)},
        wildcards=SimpleNamespace(objective="hinge", seed="3"),
    )  # fmt: skip
    hook = tensorboard_hook(smk)
    assert hook is not None
    hook()
    got = read_scalars(tmp_path / "logs" / "tensorboard" / "irl" / "hinge_seed3")
    assert got["irl/val_pair_accuracy"] == [(0, 0.5), (1, 0.75)]
    # off by default, and never for rules that do not train
    assert tensorboard_hook(SimpleNamespace(**{**vars(smk), "config": {}})) is None
    assert tensorboard_hook(SimpleNamespace(**{**vars(smk), "rule": "evaluate"})) is None


def test_missing_package_is_named_before_training(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    smk = SimpleNamespace(config={"tensorboard": True}, rule="sft", output={}, wildcards=SimpleNamespace())
    with pytest.raises(ImportError, match=r"pip install -e '\.\[tensorboard\]'"):
        tensorboard_hook(smk)
