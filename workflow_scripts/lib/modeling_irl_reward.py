"""A learned IRL reward model as a Hugging Face model (``trust_remote_code``): backbone + the reward head on the last
real token. Standalone on purpose: every saved reward model directory carries a copy of this file, so it loads from
any folder without this repository::

    from transformers import AutoModel, AutoTokenizer
    model = AutoModel.from_pretrained("reward_model", trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained("reward_model", trust_remote_code=True)
    rewards = model.score(["You are wonderful.", "You are an idiot."], tokenizer)  # higher = less toxic

It computes exactly what the pipeline's ``RewardModel`` computes: the text's tokens without special tokens, cut from
the left to the last ``max_text_tokens`` (an empty text becomes EOS), the backbone's final hidden state (after its final
norm) at the last real token, a parameter-free LayerNorm, a linear map to one number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel


class IRLRewardConfig(PretrainedConfig):
    model_type = "irl_reward"

    def __init__(self, backbone: dict[str, Any] | None = None, max_text_tokens: int = 96, **kwargs: Any) -> None:
        self.backbone = dict(backbone or {})  # the backbone's own config (with its model_type)
        self.max_text_tokens = max_text_tokens  # (not "max_length": transformers reads that as a generation setting)
        super().__init__(**kwargs)

    def backbone_config(self) -> PretrainedConfig:
        values = dict(self.backbone)
        return AutoConfig.for_model(values.pop("model_type"), **values)


class IRLRewardModel(PreTrainedModel):
    config_class = IRLRewardConfig
    base_model_prefix = "backbone"

    def __init__(self, config: IRLRewardConfig) -> None:
        super().__init__(config)
        backbone_config = config.backbone_config()
        self.backbone = AutoModel.from_config(backbone_config)
        self.norm = torch.nn.LayerNorm(backbone_config.hidden_size, elementwise_affine=False)
        self.head = torch.nn.Linear(backbone_config.hidden_size, 1)
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:  # weights always come from the checkpoint
        pass

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One reward per row; right or left padding."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = (attention_mask.long() * (positions + 1)).argmax(-1)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
        return self.head(self.norm(pooled)).squeeze(-1)

    @torch.no_grad()
    def score(self, texts: Sequence[str], tokenizer: Any, batch_size: int = 32) -> torch.Tensor:
        """Rewards of whole texts (prompt + completion), higher = better."""
        out = []
        for i in range(0, len(texts), batch_size):
            ids = [
                tokenizer(t, add_special_tokens=False)["input_ids"][-self.config.max_text_tokens :]
                or [tokenizer.eos_token_id]
                for t in texts[i : i + batch_size]
            ]
            width = max(len(x) for x in ids)
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=self.device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=self.device)
            out.append(self(input_ids, mask).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)
