"""Multi-head attention with named Q/K/V projections.

Q comes from whoever is asking (a patch, a query), K decides which tokens are relevant to it, V carries what is passed
on. The default path is ``F.scaled_dot_product_attention``; the weights are only materialised when asked for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def _heads(self, x: Tensor) -> Tensor:  # [B, L, D] -> [B, H, L, Dh]
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """query [B, Lq, D], key/value [B, Lk, D], key_padding_mask [B, Lk] (True = padding, ignored).

        Returns (out [B, Lq, D], weights [B, H, Lq, Lk] or None). Each row of ``weights`` sums to 1.
        """
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        attn_mask = None
        if key_padding_mask is not None:
            attn_mask = ~key_padding_mask[:, None, None, :]  # True = may attend
        p = self.dropout if self.training else 0.0
        if need_weights:
            logits = (q @ k.transpose(-2, -1)) * self.head_dim ** -0.5
            if attn_mask is not None:
                logits = logits.masked_fill(~attn_mask, float("-inf"))
            weights = logits.softmax(dim=-1)
            out = F.dropout(weights, p, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
            weights = None
        b, _, lq, _ = out.shape
        out = out.transpose(1, 2).reshape(b, lq, self.num_heads * self.head_dim)
        return self.out_proj(out), weights


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (DETR's box/mask MLP)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mlp_ratio: float, dropout: float = 0.0) -> None:
        hidden = int(dim * mlp_ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


def sine_position_encoding_2d(h: int, w: int, dim: int, device=None, dtype=torch.float32) -> Tensor:
    """DETR's 2-D sine encoding: [h*w, dim], half the channels for y, half for x."""
    if dim % 4:
        raise ValueError(f"positional encoding dim must be divisible by 4, got {dim}")
    n = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(n, device=device, dtype=torch.float32) / n))
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 * torch.pi
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 * torch.pi
    y = ys[:, None] * omega[None]  # [h, n]
    x = xs[:, None] * omega[None]  # [w, n]
    y = torch.cat([y.sin(), y.cos()], dim=-1)[:, None, :].expand(h, w, 2 * n)
    x = torch.cat([x.sin(), x.cos()], dim=-1)[None, :, :].expand(h, w, 2 * n)
    return torch.cat([y, x], dim=-1).reshape(h * w, dim).to(dtype)


def sine_position_encoding_points(coords: Tensor, dim: int) -> Tensor:
    """The same 2-D sine code as :func:`sine_position_encoding_2d`, at continuous points: coords [..., 2] as (x, y)
    normalised to [0, 1] of the input square -> [..., dim]. A patch centre ((j + 0.5) / w, (i + 0.5) / h) gets
    exactly row i * w + j of the grid encoding."""
    if dim % 4:
        raise ValueError(f"positional encoding dim must be divisible by 4, got {dim}")
    n = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(n, device=coords.device, dtype=torch.float32) / n))
    c = coords.float() * 2 * torch.pi
    x = c[..., 0:1] * omega
    y = c[..., 1:2] * omega
    return torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=-1)
