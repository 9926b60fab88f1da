"""SFT's frozen-bottom cache: one bottom pass per text, and the same training as recomputing it every epoch."""

from pathlib import Path

import pandas as pd
import pytest
import torch

from workflow_scripts.lib.config import from_config
from workflow_scripts.lib.lm import freeze_bottom_layers, load_lm
from workflow_scripts.lib.sft import SFTConfig, _train

REPO = Path(__file__).resolve().parent.parent


def _sft(model_dir: Path, cache_bottom: bool, num_layers_unfrozen: int = 1):
    texts = pd.read_parquet(REPO / "resources" / "jigsaw_style_texts.parquet")["text"].head(24).tolist()
    cfg = from_config(
        SFTConfig,
        "sft",
        {"num_layers_unfrozen": num_layers_unfrozen, "epochs": 3, "batch_size": 8, "max_length": 24, "seed": 1},
    )
    model, tokenizer, _ = load_lm(model_dir)
    return _train(cfg, model, tokenizer, texts, cache_bottom=cache_bottom)


def test_cached_bottom_trains_as_recomputing_it(tiny_model_dir: Path) -> None:
    cached, cached_log, cached_summary = _sft(tiny_model_dir, cache_bottom=True)
    plain, plain_log, plain_summary = _sft(tiny_model_dir, cache_bottom=False)
    assert cached_summary["bottom_passes_per_text"] == 1.0  # each of the 24 texts once, not once per epoch
    assert plain_summary["bottom_passes_per_text"] == 3
    epoch0 = cached_log["epoch"] == 0
    # the first epoch computes the same bottom on the same batches: the same losses, to the last bit
    assert cached_log.loc[epoch0, "loss"].tolist() == plain_log.loc[epoch0, "loss"].tolist()
    # later epochs take the bottom from other batch compositions: equal up to fp32 rounding of a 2-block pass
    torch.testing.assert_close(
        torch.tensor(cached_log["loss"].to_numpy()), torch.tensor(plain_log["loss"].to_numpy()), rtol=1e-5, atol=1e-6
    )
    for (name, a), (_, b) in zip(cached.named_parameters(), plain.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
    initial = load_lm(tiny_model_dir)[0]
    freeze_bottom_layers(initial, 1)
    trainable = {n for n, p in initial.named_parameters() if p.requires_grad}
    pairs = zip(cached.named_parameters(), initial.named_parameters(), strict=True)
    changed = {n for (n, a), (_, b) in pairs if not torch.equal(a, b)}
    assert changed == trainable  # the top block, final norm and untied head trained; nothing below them moved


@pytest.mark.parametrize("num_layers_unfrozen", [-1, 3])
def test_no_cache_without_a_frozen_bottom(tiny_model_dir: Path, num_layers_unfrozen: int) -> None:
    _, _, summary = _sft(tiny_model_dir, cache_bottom=True, num_layers_unfrozen=num_layers_unfrozen)
    assert summary["bottom_passes_per_text"] == 0
