"""Fusion and the QueryDecoder.

Fusion: every image token cross-attends to the prompt's word tokens (Q from a patch, K/V from the words), so the
image features know what is being asked for before any object query looks at them (SAM 3's fusion encoder).

QueryDecoder: K learned object queries plus one presence token. Each layer: self-attention among the queries (they
negotiate who takes which object), cross-attention to the text tokens (which words matter), cross-attention to the
image tokens (where the object is), then an MLP.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import SamLiteConfig
from .attention import Attention, FeedForward


class FusionLayer(nn.Module):
    """Image tokens cross-attend to the prompt's tokens (Q from a patch, K/V from the words and visual-prompt
    tokens), then an MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.text_cross_attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio, dropout)

    def forward(self, image: Tensor, pos: Tensor, text: Tensor, text_padding: Tensor,
                need_weights: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        """image [B, N, D], pos [N, D], text [B, T, D]. Returns the tokens and, when asked, the weights by kind."""
        a, w_text = self.text_cross_attn(self.norm1(image) + pos, text, text, text_padding, need_weights)
        image = image + a
        weights = {"text_cross_attn": w_text} if need_weights else {}
        return image + self.mlp(self.norm2(image)), weights


class QueryDecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.text_cross_attn = Attention(dim, heads, dropout)
        self.norm3 = nn.LayerNorm(dim)
        self.image_cross_attn = Attention(dim, heads, dropout)
        self.norm4 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio, dropout)

    def forward(self, queries: Tensor, query_pos: Tensor, text: Tensor, text_padding: Tensor, image: Tensor,
                image_pos: Tensor, need_weights: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        """queries [B, 1+K, D] (index 0 = presence token), text [B, T, D], image [B, N, D], image_pos [N, D]."""
        h = self.norm1(queries)
        a, w_self = self.self_attn(h + query_pos, h + query_pos, h, need_weights=need_weights)
        queries = queries + a
        a, w_text = self.text_cross_attn(self.norm2(queries) + query_pos, text, text, text_padding, need_weights)
        queries = queries + a
        a, w_img = self.image_cross_attn(self.norm3(queries) + query_pos, image + image_pos, image, None, need_weights)
        queries = queries + a
        queries = queries + self.mlp(self.norm4(queries))
        weights = {"self_attn": w_self, "text_cross_attn": w_text, "image_cross_attn": w_img} if need_weights else {}
        return queries, weights


class QueryDecoder(nn.Module):
    def __init__(self, config: SamLiteConfig) -> None:
        super().__init__()
        d = config.d_model
        self.num_queries = config.num_queries
        self.query_embed = nn.Embedding(config.num_queries, d)  # content of each object query
        self.query_pos = nn.Embedding(config.num_queries, d)  # its identity, added to Q/K at every layer
        self.presence_token = nn.Embedding(1, d)
        self.presence_pos = nn.Embedding(1, d)
        self.layers = nn.ModuleList(QueryDecoderLayer(d, config.num_heads, config.mlp_ratio, config.dropout)
                                    for _ in range(config.decoder_layers))
        self.norm = nn.LayerNorm(d)

    def forward(self, text: Tensor, text_padding: Tensor, image: Tensor, image_pos: Tensor,
                presence_init: Tensor | None = None, output_attentions: bool = False
                ) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
        """Returns the normalised query states after every layer, each [B, 1+K, D] (index 0 = presence token), and
        per layer the attention weights when asked for."""
        b = image.shape[0]
        x = torch.cat([self.presence_token.weight, self.query_embed.weight])[None].expand(b, -1, -1)
        if presence_init is not None:
            x = torch.cat([x[:, :1] + presence_init[:, None], x[:, 1:]], dim=1)
        pos = torch.cat([self.presence_pos.weight, self.query_pos.weight])
        states, attentions = [], []
        for layer in self.layers:
            x, w = layer(x, pos, text, text_padding, image, image_pos, output_attentions)
            states.append(self.norm(x))
            attentions.append(w)
        return states, attentions
