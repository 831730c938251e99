"""The ImageNet prior: what the pretrained backbone already knows, turned into a prompt-conditioned heat map.

Lite0's own classifier is applied at every stride-32 location; the 1,000 class probabilities are weighted by how
similar the prompt is to each class name ("a photo of a {class}", MiniLM, softmax at a low temperature). Where the
prompt names an ImageNet concept ("dog", "automobile", "mug"), this lights up the right region with no training at
all; for concepts ImageNet lacks ("person", "sky") the similarity is low and the model learns to ignore it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .text_encoder import imagenet_class_embeddings

NUM_PRIOR_CHANNELS = 4
NUM_PRIOR_STATS = 4


class ImageNetPrior(nn.Module):
    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature
        self.register_buffer("class_embeddings", torch.empty(0), persistent=False)

    def _class_embeddings(self, ref: Tensor) -> Tensor:
        if self.class_embeddings.numel() == 0:
            self.class_embeddings = imagenet_class_embeddings().to(ref.device)
        return self.class_embeddings.to(ref.dtype)

    def class_weights(self, sentence: Tensor) -> tuple[Tensor, Tensor]:
        """sentence [B, 384] -> weights over classes [B, 1000] (sum 1), best cosine similarity [B]."""
        sim = sentence @ self._class_embeddings(sentence).T
        return (sim / self.temperature).softmax(-1), sim.max(-1).values

    def forward(self, class_logits: Tensor, sentence: Tensor) -> tuple[Tensor, Tensor]:
        """class_logits [B, 1000, h, w], sentence [B, 384] -> maps [B, 4, h, w], stats [B, 4]."""
        class_logits = class_logits.float()
        w, best_sim = self.class_weights(sentence.float())
        p = torch.einsum("bk,bkhw->bhw", w, class_logits.softmax(1))  # probability of the prompted concept
        peak = p.flatten(1).max(1).values
        logp = torch.log(p + 1e-4) / 4.0
        maps = torch.stack([p, logp, p / (peak[:, None, None] + 1e-4),
                            best_sim[:, None, None].expand_as(p)], dim=1)
        stats = torch.stack([peak, p.flatten(1).mean(1), torch.log(peak + 1e-4) / 4.0, best_sim], dim=1)
        return maps, stats
