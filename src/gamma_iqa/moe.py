"""MoAE: Mixture of Assessment Experts (gamma.md §3).

Legend of tensor dimensions:
    B  batch (images or prompts)
    L  tokens per sequence
    d  block width (768 vision, 512 text for ViT-B/16)
    E  adaptive experts (3)

    out = shared(x) + scale * sum_i softmax(router(x))_i * expert_i(x)

`shared` is the frozen pretrained MLP; the E experts are trainable copies of it; the router is a dense per-token
Linear(d, E) + softmax (no top-k, no noise, no auxiliary loss); `scale` is one scalar initialised to 0, so a fresh
block equals the pretrained MLP exactly.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .clip import Mlp, Transformer

__all__ = ["MoAE", "install_moae"]


class MoAE(nn.Module):
    """A block MLP replaced by a frozen shared expert plus `num_experts` routed adaptive experts."""

    def __init__(self, mlp: Mlp, *, num_experts: int) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        width = mlp.c_fc.in_features
        self.shared = copy.deepcopy(mlp).requires_grad_(False)
        self.experts = nn.ModuleList(copy.deepcopy(mlp).requires_grad_(True) for _ in range(num_experts))
        self.router = nn.Linear(width, num_experts)
        self.scale = nn.Parameter(torch.zeros(()))

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token routing weights: (..., d) -> (..., E), summing to 1 over E."""
        return self.router(x).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gates(x)  # (B, L, E)
        mixed = g[..., 0:1] * self.experts[0](x)  # (B, L, d)
        for i in range(1, len(self.experts)):
            mixed = mixed + g[..., i : i + 1] * self.experts[i](x)
        return self.shared(x) + self.scale * mixed


def install_moae(transformer: Transformer, *, num_layers: int, num_experts: int) -> None:
    """Replace the MLP of the last `num_layers` blocks with MoAE blocks copied from it (in place)."""
    blocks = transformer.resblocks
    if not 0 <= num_layers <= len(blocks):
        raise ValueError(f"num_layers must be in [0, {len(blocks)}], got {num_layers}")
    for block in blocks[len(blocks) - num_layers :]:
        if not isinstance(block.mlp, Mlp):
            raise TypeError("MoAE is already installed in this block")
        block.mlp = MoAE(block.mlp, num_experts=num_experts)
