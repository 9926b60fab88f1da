"""The PPO stage's settings: the ``rlhf`` section (trlx names; defaults and docs in config.schema.yaml), derived
counts (optimizer steps per iteration, iterations), the rollout sampling settings and a fingerprint that keeps a
checkpoint of another configuration from being resumed."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

from workflow_scripts.lib.config import ppo_problems, raise_problems
from workflow_scripts.lib.generation import GenerationSettings


@dataclass
class PPOConfig:
    """The ``rlhf`` section (trlx names; defaults and docs in config.schema.yaml)."""

    total_steps: int  # optimizer steps (trlx ``train.total_steps``)
    num_rollouts: int  # rollouts collected per PPO iteration
    chunk_size: int  # prompts per generation batch
    ppo_epochs: int
    batch_size: int  # minibatch size for the updates
    bucket_rows: int | None  # rows per length bucket of a top-block pass (None: one pass per minibatch)
    num_layers_unfrozen: int
    learning_rate: float
    weight_decay: float
    scheduler: dict  # {name: constant | cosine_annealing, T_max, eta_min}
    max_grad_norm: float
    init_kl_coef: float
    target: float | None  # None: fixed KL coefficient; else adaptive towards this KL (nats per sequence)
    horizon: int
    gamma: float
    lam: float
    cliprange: float
    cliprange_value: float
    vf_coef: float
    scale_reward: str | None  # running | none
    cliprange_reward: float
    max_new_tokens: int
    top_k: int
    top_p: float
    temperature: float
    max_prompt_tokens: int
    checkpoint_interval: int  # iterations
    seed: int

    def __post_init__(self) -> None:
        if self.scale_reward == "none":
            self.scale_reward = None
        if self.scale_reward not in (None, "running"):
            raise ValueError(f"scale_reward must be 'running' or 'none', got {self.scale_reward!r}")
        raise_problems(ppo_problems(asdict(self), "rlhf"))
        if self.num_layers_unfrozen < 1:
            raise ValueError("num_layers_unfrozen must be >= 1 (the frozen bottom is shared with the reference)")

    @property
    def steps_per_iteration(self) -> int:
        return self.ppo_epochs * (self.num_rollouts // self.batch_size)

    @property
    def iterations(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_iteration)

    def generation_settings(self) -> GenerationSettings:
        """Rollout sampling, every setting explicit (transformers would otherwise sample with its own top_k=50)."""
        return GenerationSettings(
            max_new_tokens=self.max_new_tokens, do_sample=True, top_k=self.top_k, top_p=self.top_p,
            temperature=self.temperature, num_return_sequences=1, batch_size=self.chunk_size,
            max_prompt_tokens=self.max_prompt_tokens,
        )  # fmt: skip

    def fingerprint(self) -> str:
        """Hash of everything that changes the run (a checkpoint from another config is never resumed)."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]
