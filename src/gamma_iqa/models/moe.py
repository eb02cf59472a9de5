"""MoAE: Mixture of Assessment Experts (gamma.md §3).

Legend of tensor dimensions:
    B  batch (images or prompts)
    L  tokens per sequence
    N  tokens in all, B * L
    d  block width (768 vision, 512 text for ViT-B/16)
    H  expert hidden width, 4d
    E  adaptive experts (3); with the shared expert, 1 + E MLPs per block

    out = shared(x) + scale * sum_i softmax(router(x))_i * expert_i(x)

`shared` is the frozen pretrained MLP; the E experts are trainable copies of it; the router is a dense per-token
Linear(d, E) + softmax (no top-k, no noise, no auxiliary loss); `scale` is one scalar initialised to 0, so a fresh
block equals the pretrained MLP exactly.

Two forward forms compute the same function (fp32 agreement to ~1e-6; tested, gradients included):
- `forward_reference`: the formula as written, 1 + E separate MLPs.
- `forward_fused` (the default): the shared expert runs exactly as the plain MLP (so a block with scale 0 equals the
  pretrained MLP bit for bit, fused or not); the E adaptive experts' first layers are one (N, d) x (d, E H) product,
  their activation one SiLU (QuickGELU(z) = silu(1.702 z) / 1.702, with 1.702 folded into the first layer's weights
  and 1 / 1.702 into the second's), their second layers one batched product on the hidden chunks, and the gates
  applied to the (E, N, d) outputs, which are H/d = 4 times smaller than the hidden: an eager gate-weighted hidden is
  a large extra elementwise pass (see benchmarks/README.md for the measurements behind the choice).

`PositionwiseMoAE` is the same formula around any position-wise unit, in its reference form only; `MoAE` adds the
fused form for CLIP's MLP. gamma-lite wraps the 1x1 convolutions of EfficientNet-Lite blocks with it
(`install_conv_moae`), routing each pixel of a (B, C, H, W) map like a token.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .clip import QUICK_GELU_ALPHA, Mlp, Transformer, autocast_dtype

__all__ = ["MoAE", "PositionwiseMoAE", "install_conv_moae", "install_moae", "set_moae_fused"]

FusedWeights = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _compiling() -> bool:
    """Whether torch.compile is tracing the caller (never on torch < 2.3, which cannot say)."""
    try:
        return torch.compiler.is_compiling()
    except AttributeError:  # torch < 2.3
        return False


class PositionwiseMoAE(nn.Module):
    """MoAE around any position-wise map `unit` (a per-token MLP, a 1x1 convolution + BatchNorm, ...).

    out = shared(x) + scale * sum_i gates(x)_i * expert_i(x), with `shared` the frozen `unit`, the experts trainable
    copies of it, and the router a Linear(width, E) + softmax over the `width` input channels at `channel_dim`
    (-1 for token sequences (..., d); 1 for feature maps (B, C, H, W), routed per pixel). Keys: `shared.*`,
    `experts.{i}.*`, `router.*`, `scale`.
    """

    def __init__(self, unit: nn.Module, *, width: int, num_experts: int, channel_dim: int = -1) -> None:
        """Wrap a pretrained unit: a frozen copy as the shared expert, trainable copies as the experts.

        Args:
            unit: the pretrained position-wise module; copied, not modified.
            width: the unit's input channels, the router's input.
            num_experts: adaptive experts E (3 in gamma.md §3).
            channel_dim: the channel dimension of the input: -1 for token sequences, 1 for feature maps.

        Raises:
            ValueError: `num_experts` < 1.
        """
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.channel_dim = channel_dim
        self.shared = copy.deepcopy(unit).requires_grad_(False)
        self.experts = nn.ModuleList(copy.deepcopy(unit).requires_grad_(True) for _ in range(num_experts))
        self.router = nn.Linear(width, num_experts)
        self.scale = nn.Parameter(torch.zeros(()))

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """Per-position routing weights, E in place of the channels, summing to 1 over E; fp32 even under autocast.

        At least fp32: a float64 model keeps float64 (its finite-difference gradient checks need it).

        Shapes: (..., d) -> (..., E) for tokens, (B, C, H, W) -> (B, E, H, W) for feature maps.
        """
        if self.channel_dim == -1:
            logits = self.router(x)
            return logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(dim=-1)
        logits = self.router(x.movedim(self.channel_dim, -1))
        gates = logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(dim=-1)
        # A non-negative source dim: the TorchScript ONNX exporter writes -1 into Transpose's perm, which is invalid.
        return gates.movedim(gates.dim() - 1, self.channel_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reference form (`forward_reference`)."""
        return self.forward_reference(x)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The formula as written, 1 + E separate units: (B, L, d) -> (B, L, d), or (B, C, H, W) -> (B, C', H, W)."""
        g = self.gates(x)  # (B, L, E) or (B, E, H, W)
        mixed = g.narrow(self.channel_dim, 0, 1) * self.experts[0](x)
        for i in range(1, len(self.experts)):
            mixed = mixed + g.narrow(self.channel_dim, i, 1) * self.experts[i](x)
        return self.shared(x) + self.scale * mixed


class MoAE(PositionwiseMoAE):
    """A block MLP replaced by a frozen shared expert plus `num_experts` routed adaptive experts.

    `fused` (default True) selects `forward_fused`, False the straightforward `forward_reference`. Parameters and
    state-dict keys are the same either way: `shared.*`, `experts.{i}.*`, `router.*`, `scale`. `cache_weights`
    (default True) keeps the fused weight layout between calls without autograd; False rebuilds it on every call,
    which suits blocks that run rarely, such as the text tower's at inference, whose features the model caches.
    """

    def __init__(self, mlp: Mlp, *, num_experts: int, cache_weights: bool = True) -> None:
        """Wrap a pretrained block MLP (copied, not modified) with `num_experts` adaptive experts (3, gamma.md §3).

        Raises:
            ValueError: `num_experts` < 1.
        """
        super().__init__(mlp, width=mlp.c_fc.in_features, num_experts=num_experts)
        self.fused = True
        self.cache_weights = cache_weights
        self._cache_state: tuple = ()  # the MLP parameters' devices, dtypes, storages and versions
        self._cache: dict[torch.dtype | None, FusedWeights] = {}  # autocast dtype (None: off) -> weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., d), fused or reference as `fused` says."""
        return self.forward_fused(x) if self.fused else self.forward_reference(x)

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """The shared expert as is, the E experts in two wide products: (..., d) -> (..., d)."""
        w1, b1, w2, b2 = self.fused_weights()
        e, d = w2.shape[0], x.shape[-1]
        flat = x.reshape(-1, d)  # (N, d)
        # Without autograd the SiLU may overwrite its input; with it, SiLU's backward needs that input.
        h = F.silu(F.linear(flat, w1, b1), inplace=not torch.is_grad_enabled())  # (N, E H): 1.702 QuickGELU
        y = torch.baddbmm(b2, h.view(flat.shape[0], e, -1).transpose(0, 1), w2)  # (E, N, d)
        sg = self.scale * self.gates(flat)  # (N, E)
        mixed = y[0] * sg[:, :1]  # (N, d); fp32 under autocast, as the reference's gate mix
        for i in range(1, e):
            mixed.addcmul_(y[i], sg[:, i : i + 1])
        return self.shared(x) + mixed.view(x.shape)

    def fused_weights(self) -> FusedWeights:
        """The E adaptive experts' weights laid out for `forward_fused`.

        w1 (E H, d) and b1 (E H,): the first layers stacked, times 1.702; w2 (E, H, d): the second layers transposed,
        over 1.702; b2 (E, 1, d). When autograd tracks the experts (training) they are rebuilt on every call, so that
        gradients flow to each expert; otherwise they are cached per autocast dtype (cast once rather than on every
        product) and dropped when a parameter changes (an optimiser step or a load bumps its version), moves or is
        cast. The cache costs one more copy of the experts' weights per dtype.
        """
        mlps = list(self.experts)
        params = [p for m in mlps for p in (m.c_fc.weight, m.c_fc.bias, m.c_proj.weight, m.c_proj.bias)]
        if not self.cache_weights or _compiling() or (torch.is_grad_enabled() and any(p.requires_grad for p in params)):
            return self._build_fused(mlps)
        state = tuple((p.device, p.dtype, p.data_ptr(), p._version) for p in params)
        if state != self._cache_state:
            self._cache_state, self._cache = state, {}
        dtype = autocast_dtype(params[0].device.type)
        if dtype not in self._cache:
            weights = self._build_fused(mlps)
            self._cache[dtype] = weights if dtype is None else tuple(w.to(dtype) for w in weights)
        return self._cache[dtype]

    @staticmethod
    def _build_fused(mlps: list[Mlp]) -> FusedWeights:
        """Stack the experts' layers into `forward_fused`'s layout (see `fused_weights`)."""
        w1 = torch.cat([m.c_fc.weight for m in mlps]) * QUICK_GELU_ALPHA  # (E H, d)
        b1 = torch.cat([m.c_fc.bias for m in mlps]) * QUICK_GELU_ALPHA  # (E H,)
        w2 = torch.stack([m.c_proj.weight for m in mlps]).transpose(1, 2) / QUICK_GELU_ALPHA  # (E, H, d)
        b2 = torch.stack([m.c_proj.bias for m in mlps]).unsqueeze(1)  # (E, 1, d)
        return w1, b1, w2, b2


def install_moae(transformer: Transformer, *, num_layers: int, num_experts: int, cache_weights: bool = True) -> None:
    """Replace the MLP of a tower's last blocks with MoAE blocks copied from it (in place; gamma.md §3).

    Args:
        transformer: the tower; its MLPs must be plain `Mlp`s.
        num_layers: how many of the last blocks get MoAE (6 of 12 in gamma.md §3).
        num_experts: adaptive experts per block (3 in gamma.md §3).
        cache_weights: as `MoAE`'s (False for the text tower, whose features the model caches).

    Raises:
        ValueError: `num_layers` outside [0, number of blocks].
        TypeError: MoAE is already installed in one of those blocks.
    """
    blocks = transformer.resblocks
    if not 0 <= num_layers <= len(blocks):
        raise ValueError(f"num_layers must be in [0, {len(blocks)}], got {num_layers}")
    for block in blocks[len(blocks) - num_layers :]:
        if not isinstance(block.mlp, Mlp):
            raise TypeError("MoAE is already installed in this block")
        block.mlp = MoAE(block.mlp, num_experts=num_experts, cache_weights=cache_weights)


def set_moae_fused(module: nn.Module, fused: bool) -> None:
    """Switch every MoAE block under a module to the fused or the straightforward forward.

    Args:
        module: searched recursively (e.g. a whole model).
        fused: True: `forward_fused`; False: `forward_reference`. Both compute the same function (to ~1e-6 in fp32).
    """
    for m in module.modules():
        if isinstance(m, MoAE):
            m.fused = fused


def install_conv_moae(blocks: Iterable[nn.Module], *, names: Sequence[str], num_experts: int) -> None:
    """Wrap position-wise units of each block in a per-pixel MoAE (in place), as gamma-lite does.

    Args:
        blocks: the blocks to modify (e.g. the last MBConv blocks of an EfficientNet-Lite).
        names: attribute names of the units in each block; a unit is a module with a 1x1 `.conv` (a ConvBN).
            Units that a block lacks (an `nn.Identity` in their place) are skipped.
        num_experts: adaptive experts per unit.

    Raises:
        TypeError: MoAE is already installed on one of the units.
        ValueError: a unit's convolution is not 1x1, so not position-wise.
    """
    for block in blocks:
        for name in names:
            unit = getattr(block, name)
            if isinstance(unit, nn.Identity):
                continue
            if isinstance(unit, PositionwiseMoAE):
                raise TypeError("MoAE is already installed in this block")
            if unit.conv.kernel_size != (1, 1):
                raise ValueError(f"{name} is not position-wise (kernel {unit.conv.kernel_size})")
            moae = PositionwiseMoAE(unit, width=unit.conv.in_channels, num_experts=num_experts, channel_dim=1)
            setattr(block, name, moae)
