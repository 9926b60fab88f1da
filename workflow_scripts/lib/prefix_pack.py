"""Shared prompt states: sequences that begin with the same tokens (the completions of one prompt) computed with
that common prefix once.

``pack_prefixes`` lays each group out as one row, ``[prefix, rest of member 1, rest of member 2, ...]``, and
``run_packed`` runs blocks over the rows with a 4D attention mask (each rest sees the prefix and, causally, itself;
never another member's rest) and explicit positions (each rest continues the prefix's positions). With causal
attention a position's state depends only on the tokens up to it, so every member's states equal those of its own
unpacked pass up to float rounding, and gradients flow through the shared part once for all members
(``tests/test_prefix_pack.py`` checks states and gradients against the unpacked computation).

Used where several texts of one prompt are scored: IRL training and validation pairs (with gradients through the
trained top) and the frozen-bottom IRL features (no gradients). The policy's implicit reward is not packed: no gain
measured (``benchmarks/README.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from workflow_scripts.lib.lm import run_blocks

PACKED_ATTENTION = ("sdpa", "eager")  # attention implementations that apply a custom 4D mask as given


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix every sequence of ``seqs`` starts with."""
    if not seqs:
        return 0
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for i in range(n):
        if any(s[i] != first[i] for s in seqs[1:]):
            return i
    return n


def group_by_key(keys: Sequence[str]) -> list[list[int]]:
    """Indices of equal keys (e.g. each text's prompt) grouped, in order of first appearance: the groups to pack."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def packed_length(seqs: Sequence[Sequence[int]]) -> int:
    """Positions of one packed row of ``seqs``: their common prefix once, then each one's rest."""
    shared = common_prefix(seqs)
    return shared + sum(len(s) - shared for s in seqs)


def group_batches(seqs: Sequence[Sequence[int]], groups: Sequence[Sequence[int]], rows: int) -> list[list[int]]:
    """Indices of ``groups`` sorted by (packed length, index) and cut into batches of ``rows``: packed rows of
    similar length together, so a padded batch wastes little compute."""
    lengths = [packed_length([seqs[i] for i in g]) for g in groups]
    order = sorted(range(len(groups)), key=lambda g: (lengths[g], g))
    return [order[i : i + rows] for i in range(0, len(order), rows)]


@dataclass(frozen=True)
class PrefixPack:
    """Packed rows. Per row: ``runs``, the (sequence, start, end) slices it is made of (the shared prefix taken from
    the group's first member, then each member's rest), ``segment`` per packed position (0 the shared prefix, j the
    rest of the row's j-th member) and ``position``; per sequence, ``where`` = (row, packed index of each of its
    positions, in order)."""

    runs: list[list[tuple[int, int, int]]]
    segment: list[list[int]]
    position: list[list[int]]
    where: list[tuple[int, list[int]]]

    @property
    def width(self) -> int:
        return max((len(s) for s in self.segment), default=0)

    def shared_positions(self) -> int:
        """Positions the packing saves against one pass per sequence."""
        return sum(len(w) for _, w in self.where) - sum(len(s) for s in self.segment)


def pack_prefixes(seqs: Sequence[Sequence[int]], groups: Sequence[Sequence[int]]) -> PrefixPack:
    """One row per group of sequence indices (each sequence in exactly one group): the group's common prefix once,
    then each member's remaining tokens."""
    if sorted(i for g in groups for i in g) != list(range(len(seqs))):
        raise ValueError("every sequence must be in exactly one group")
    if any(len(s) == 0 for s in seqs):
        raise ValueError("cannot pack an empty sequence")
    runs, segment, position = [], [], []
    where: list[tuple[int, list[int]]] = [(0, [])] * len(seqs)
    for row, group in enumerate(groups):
        shared = common_prefix([seqs[i] for i in group])
        run, seg, pos = [(group[0], 0, shared)], [0] * shared, list(range(shared))
        for j, i in enumerate(group, start=1):
            n = len(seqs[i])
            where[i] = (row, list(range(shared)) + list(range(len(seg), len(seg) + n - shared)))
            run.append((i, shared, n))
            seg += [j] * (n - shared)
            pos += list(range(shared, n))
        runs.append(run)
        segment.append(seg)
        position.append(pos)
    return PrefixPack(runs, segment, position, where)


def packed_attention(pack: PrefixPack, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(attention mask [rows, 1, width, width], bool, True = may attend; position ids [rows, width]). A padding
    position attends only to itself (never read; a row of no allowed key would make attention NaN)."""
    width = pack.width
    seg = torch.full((len(pack.segment), width), -1, dtype=torch.long)
    pos = torch.zeros((len(pack.segment), width), dtype=torch.long)
    for r, (s, p) in enumerate(zip(pack.segment, pack.position, strict=True)):
        seg[r, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        pos[r, : len(p)] = torch.as_tensor(p, dtype=torch.long)
    q, k = seg[:, :, None], seg[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allow = causal & ((k == 0) | (k == q)) & (q >= 0)
    allow |= torch.eye(width, dtype=torch.bool)  # padding rows (and every position) may see themselves
    return allow[:, None].to(device), pos.to(device)


def pack_values(pack: PrefixPack, values: Sequence[torch.Tensor], fill: float | int = 0) -> torch.Tensor:
    """Per-sequence tensors ([len, ...]: token ids, or hidden states of an earlier block range) laid out as the packed
    rows, padded with ``fill``."""
    first = values[0]
    out = torch.full((len(pack.runs), pack.width, *first.shape[1:]), fill, dtype=first.dtype, device=first.device)
    for r, run in enumerate(pack.runs):
        row = torch.cat([values[i][a:b] for i, a, b in run])
        out[r, : len(row)] = row
    return out


def unpack(pack: PrefixPack, states: torch.Tensor) -> list[torch.Tensor]:
    """Per sequence, its states [len, ...] gathered from packed ``states`` [rows, width, ...] (differentiable)."""
    out = []
    for row, idx in pack.where:
        out.append(states[row, torch.as_tensor(idx, device=states.device)])
    return out


def run_packed(
    model: torch.nn.Module,
    blocks: torch.nn.ModuleList,
    norm: torch.nn.Module | None,
    pack: PrefixPack,
    input_ids: Sequence[Sequence[int]] | None = None,
    hidden: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """``run_blocks`` over packed rows, from each sequence's token ids or from its hidden states; returns each
    sequence's output states [len, H] as its own unpacked pass would."""
    if (input_ids is None) == (hidden is None):
        raise ValueError("pass exactly one of input_ids or hidden")
    attention = getattr(model.config, "_attn_implementation", None)
    if attention not in PACKED_ATTENTION:
        raise ValueError(f"packed rows need a custom 4D attention mask, which attn_implementation={attention!r} does "
                         f"not take; load the model with one of {PACKED_ATTENTION}")  # fmt: skip
    device = next(model.parameters()).device
    mask, positions = packed_attention(pack, device)
    if input_ids is not None:
        ids = pack_values(pack, [torch.as_tensor(list(s), dtype=torch.long) for s in input_ids]).to(device)
        out = run_blocks(model, blocks, norm, mask, input_ids=ids, position_ids=positions)
    else:
        assert hidden is not None
        out = run_blocks(model, blocks, norm, mask, hidden=pack_values(pack, list(hidden)), position_ids=positions)
    return unpack(pack, out)
