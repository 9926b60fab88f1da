"""A learned IRL reward model as a Hugging Face model (``trust_remote_code``): backbone + the reward head on the pooled
final hidden state (``reward_pooling``: ``last`` real token, or ``mean`` over the completion's tokens). Standalone on
purpose: every saved reward model directory carries a copy of this file, so it loads from any folder without this
repository::

    from transformers import AutoModel, AutoTokenizer
    model = AutoModel.from_pretrained("reward_model", trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained("reward_model", trust_remote_code=True)
    rewards = model.score(["You are wonderful.", "You are an idiot."], tokenizer)  # higher = less toxic
    # mean pooling averages the completion's tokens: give the prompts the texts start with
    rewards = model.score(["You are wonderful.", "You are an idiot."], tokenizer, prompts=["You are", "You are"])

It computes exactly what the pipeline's ``RewardModel`` computes: the text's tokens without special tokens, cut from
the left to the last ``max_text_tokens`` (an empty text becomes EOS), the backbone's final hidden state (after its final
norm) at the last real token (``last``) or averaged over the completion's tokens, those whose characters end after the
prompt (``mean``; the last token if there are none), a parameter-free LayerNorm, a linear map to one number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel


class IRLRewardConfig(PretrainedConfig):
    model_type = "irl_reward"

    def __init__(
        self,
        backbone: dict[str, Any] | None = None,
        max_text_tokens: int = 96,
        reward_pooling: str = "last",
        **kwargs: Any,
    ) -> None:
        self.backbone = dict(backbone or {})  # the backbone's own config (with its model_type)
        self.max_text_tokens = max_text_tokens  # (not "max_length": transformers reads that as a generation setting)
        self.reward_pooling = reward_pooling  # last | mean (the pipeline's irl.pooling)
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

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One reward per row; right or left padding. ``completion_mask`` (1 on the completion's tokens) is needed
        for mean pooling."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = (attention_mask.long() * (positions + 1)).argmax(-1)
        weights = torch.nn.functional.one_hot(last, attention_mask.shape[1]).float()
        if self.config.reward_pooling == "mean":
            if completion_mask is None:
                raise ValueError("mean pooling needs completion_mask")
            span = (completion_mask.bool() & attention_mask.bool()).float()
            weights = torch.where(span.sum(-1, keepdim=True) > 0, span, weights)
        pooled = (hidden.float() * (weights / weights.sum(-1, keepdim=True))[..., None]).sum(1)
        return self.head(self.norm(pooled)).squeeze(-1)

    @torch.no_grad()
    def score(
        self, texts: Sequence[str], tokenizer: Any, batch_size: int = 32, prompts: Sequence[str] | None = None
    ) -> torch.Tensor:
        """Rewards of whole texts (prompt + completion), higher = better; mean pooling needs ``prompts``, the prompt
        each text starts with."""
        if self.config.reward_pooling == "mean" and prompts is None:
            raise ValueError("mean pooling scores the completion: give the prompt each text starts with")
        out = []
        for i in range(0, len(texts), batch_size):
            ids, completion = [], []
            for j, text in enumerate(texts[i : i + batch_size]):
                enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
                n_prompt = len(prompts[i + j]) if prompts is not None else 0
                keep = slice(-self.config.max_text_tokens, None)
                ids.append(enc["input_ids"][keep] or [tokenizer.eos_token_id])
                completion.append([int(end > n_prompt) for _, end in enc["offset_mapping"][keep]] or [0])
            width = max(len(x) for x in ids)
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=self.device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=self.device)
            completion_mask = torch.tensor([c + [0] * (width - len(c)) for c in completion], device=self.device)
            out.append(self(input_ids, mask, completion_mask).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)
