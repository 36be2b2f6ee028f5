"""One tiny network per dependency kind (16x16 RGB inputs, 5 classes), each seeded by the caller."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import SqueezeExcitation


def cbr(cin: int, cout: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Head(nn.Module):
    def __init__(self, c: int, classes: int = 5) -> None:
        super().__init__()
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))


class ConcatAdd(nn.Module):
    """Two 6-channel branches concatenated to 12, then a residual block on the 12."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.branch_a = cbr(8, 6)
        self.branch_b = cbr(8, 6)
        self.res = nn.Sequential(nn.Conv2d(12, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12))
        self.post = cbr(12, 10)
        self.head = Head(10)

    def forward(self, x):
        x = self.stem(x)
        y = torch.cat([self.branch_a(x), self.branch_b(x)], 1)
        y = F.relu(y + self.res(y))
        return self.head(self.post(y))


class Split(nn.Module):
    """torch.chunk and torch.split: half the channels bypass, half go through a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.inner = cbr(4, 4)
        self.mid = cbr(8, 12)
        self.inner2 = cbr(8, 8)
        self.post = cbr(12, 8)
        self.head = Head(8)

    def forward(self, x):
        a, b = torch.chunk(self.stem(x), 2, dim=1)
        x = self.mid(torch.cat([a, self.inner(b)], 1))
        c, d = torch.split(x, [4, 8], dim=1)
        return self.head(self.post(torch.cat([c, self.inner2(d)], 1)))


class GroupedConv(nn.Module):
    """ResNeXt-like: 1x1 -> 3x3 with 4 groups -> 1x1, with a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.reduce = cbr(8, 16)
        self.grouped = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(16),
                                     nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.head = Head(8)

    def forward(self, x):
        x = self.stem(x)
        return self.head(F.relu(x + self.expand(self.grouped(self.reduce(x)))))


class Depthwise(nn.Module):
    """MobileNet-like: pointwise expand -> depthwise 3x3 -> pointwise project."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.expand = cbr(8, 16)
        self.dw = cbr(16, 16, groups=16)
        self.project = nn.Sequential(nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.head = Head(8)

    def forward(self, x):
        x = self.stem(x)
        return self.head(x + self.project(self.dw(self.expand(x))))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class Shuffle(nn.Module):
    """ShuffleNet-like unit: concat of two branches, channel shuffle, then a plain conv chain."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.left = cbr(8, 6)
        self.right = nn.Sequential(cbr(8, 10), cbr(10, 6))
        self.post = cbr(12, 10)
        self.head = Head(10)

    def forward(self, x):
        x = self.stem(x)
        x = channel_shuffle(torch.cat([self.left(x), self.right(x)], 1), 2)
        return self.head(self.post(x))


class SE(nn.Module):
    """Squeeze-excitation (torchvision's block) scaling a conv's output."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.conv = cbr(8, 12)
        self.se = SqueezeExcitation(12, 4)
        self.post = cbr(12, 8)
        self.head = Head(8)

    def forward(self, x):
        return self.head(self.post(self.se(self.conv(self.stem(x)))))


class LayerScale(nn.Module):
    """ConvNeXt-like: a bare nn.Parameter (C, 1, 1) multiplies the block output before the add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw1 = nn.Conv2d(8, 16, 1)
        self.pw2 = nn.Conv2d(16, 8, 1)
        self.gamma = nn.Parameter(torch.rand(8, 1, 1) + 0.5)
        self.head = Head(8)

    def forward(self, x):
        x = self.stem(x)
        return self.head(x + self.gamma * self.pw2(F.gelu(self.pw1(self.dw(x)))))


class QKVMix(nn.Module):
    """Hand-written multi-head attention: one qkv Linear, heads split by a reshape."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, l, c = x.shape
        q, k, v = self.qkv(x).reshape(n, l, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.softmax(q @ k.transpose(-2, -1) / (c // self.heads) ** 0.5, -1) @ v
        return self.proj(out.transpose(1, 2).reshape(n, l, c))


class Attention(nn.Module):
    """ViT-like: patch conv, nn.MultiheadAttention block, a hand-written qkv block, MLPs."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.norm1 = nn.LayerNorm(dim)
        self.mha = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp1 = nn.Sequential(nn.Linear(dim, 32), nn.GELU(), nn.Linear(32, dim))
        self.norm3 = nn.LayerNorm(dim)
        self.mix = QKVMix(dim, 2)
        self.mlp2 = nn.Sequential(nn.Linear(dim, 24), nn.GELU(), nn.Linear(24, dim))
        self.fc = nn.Linear(dim, 5)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)  # (N, 16 tokens, dim)
        h = self.norm1(x)
        x = x + self.mha(h, h, h, need_weights=False)[0]
        x = x + self.mlp1(self.norm2(x))
        x = x + self.mix(self.norm3(x))
        x = x + self.mlp2(x)
        return self.fc(x.mean(1))


class ShuffleV2(nn.Module):
    """ShuffleNetV2 stage: a stride-2 unit, then units that chunk(2), convolve one half, concat,
    shuffle; three shuffles and two chunks tie the trunk's channels across layers."""

    def __init__(self, c: int = 6) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.down_a = cbr(8, c)
        self.down_b = nn.Sequential(cbr(8, 10), cbr(10, c))
        self.units = nn.ModuleList(nn.Sequential(cbr(c, 8), cbr(8, 8, groups=8), cbr(8, c)) for _ in range(2))
        self.post = cbr(2 * c, 10)
        self.head = Head(10)

    def forward(self, x):
        x = self.stem(x)
        x = channel_shuffle(torch.cat([self.down_a(x), self.down_b(x)], 1), 2)
        for unit in self.units:
            keep, work = x.chunk(2, dim=1)
            x = channel_shuffle(torch.cat([keep, unit(work)], 1), 2)
        return self.head(self.post(x))


class ShuffleV1(nn.Module):
    """ShuffleNet v1 unit: grouped 1x1 conv (3 groups), shuffle, depthwise 3x3, grouped 1x1, add.
    The shuffle between the two grouped convs ties its 36 channels into 4 units of 9."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 12)
        self.reduce = cbr(12, 36, groups=3)
        self.dw = cbr(36, 36, groups=36)
        self.expand = nn.Sequential(nn.Conv2d(36, 12, 1, groups=3, bias=False), nn.BatchNorm2d(12))
        self.head = Head(12)

    def forward(self, x):
        x = self.stem(x)
        y = self.expand(self.dw(channel_shuffle(self.reduce(x), 3)))
        return self.head(F.relu(x + y))


class MaxViTBlock(nn.Module):
    """torchvision's own MaxVitLayer (MBConv with SE, window and grid attention, their MLPs) on
    16 channels: its partitions reshape the channel axis inside residual loops."""

    def __init__(self) -> None:
        from functools import partial

        from torchvision.models.maxvit import MaxVitLayer

        super().__init__()
        self.stem = cbr(3, 16)
        self.block = MaxVitLayer(16, 16, squeeze_ratio=0.25, expansion_ratio=2, stride=1,
                                 norm_layer=partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01),
                                 activation_layer=nn.GELU, head_dim=8, mlp_ratio=2, mlp_dropout=0.0,
                                 attention_dropout=0.0, p_stochastic_dropout=0.0, partition_size=4,
                                 grid_size=(16, 16))
        self.post = cbr(16, 12)
        self.head = Head(12)

    def forward(self, x):
        return self.head(self.post(self.block(self.stem(x))))


NETS = {"concat_add": ConcatAdd, "split": Split, "grouped_conv": GroupedConv, "depthwise": Depthwise,
        "channel_shuffle": Shuffle, "shufflenet_v2_stage": ShuffleV2, "shufflenet_v1_unit": ShuffleV1,
        "squeeze_excitation": SE, "layer_scale": LayerScale, "attention": Attention, "maxvit_layer": MaxViTBlock}
