"""SamLiteModel: ImageEncoder + TextEncoder + priors + fusion + QueryDecoder + heads, with save/from_pretrained."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import SamLiteConfig
from ..structures import Attentions, ImageEmbedding, LayerAttention, Prompt, TextEmbedding
from .concept_map import concept_name_embeddings
from .decoder import FusionLayer, QueryDecoder
from .heads import PredictionHeads
from .image_encoder import ImageEncoder
from .pretrained import PreTrainedModel
from .priors import ConceptMapPrior, GeometryPrior, ImageNetPrior, text_rows
from .prompt_encoder import GeometricPromptEncoder
from .text_encoder import TextEncoder

# state-dict prefixes of checkpoints written before the priors had one interface -> today's names
LEGACY_PREFIXES = {"prior_token_proj.": "priors.imagenet.token_proj.",
                   "prior_pixel_proj.": "priors.imagenet.pixel_proj.",
                   "prior_presence_proj.": "priors.imagenet.presence_proj.",
                   "concept_token_proj.": "priors.concept_map.token_proj.",
                   "concept_pixel_proj.": "priors.concept_map.pixel_proj.",
                   "concept_presence_proj.": "priors.concept_map.presence_proj.",
                   "geometry_token_proj.": "priors.geometry.token_proj.",
                   "geometry_pixel_proj.": "priors.geometry.pixel_proj."}


def rename_legacy_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A checkpoint's tensors under today's names (old prior projection names mapped, see ``LEGACY_PREFIXES``)."""
    out = {}
    for k, v in state.items():
        for old, new in LEGACY_PREFIXES.items():
            if k.startswith(old):
                k = new + k[len(old):]
                break
        out[k] = v
    return out


class SamLiteModel(PreTrainedModel):
    """Promptable instance segmentation: text, and (with ``geometric_prompts``) SAM-style points, boxes, exemplars.

    ``forward(pixel_values [B,3,S,S] (scaled by :meth:`preprocess`), prompt: Prompt of P rows, image_index [P])``
    returns a dict of named tensors: ``pred_logits [P,K]`` match logits, ``pred_masks [P,K,S/4,S/4]`` mask logits,
    ``pred_boxes [P,K,4]`` normalised cxcywh, ``presence_logits [P]``, ``pred_semantic [P,S/4,S/4]``, ``pred_iou
    [P,K]`` (geometric models), ``aux_outputs`` (the same keys for each earlier decoder layer), ``concept_logits``
    [B,C+1,S/8,S/8] (concept map), ``image_presence_logits [P]`` and ``image_concept_logits [B,C]`` (image-level
    presence: each prompt's, and every vocabulary concept's on every image), and with ``output_attentions=True``
    ``attentions``: :class:`Attentions`.
    """

    config_class, model_type = SamLiteConfig, "sam_lite"

    def __init__(self, config: SamLiteConfig | None = None, load_pretrained: bool = True) -> None:
        super().__init__()
        self.config = config = config or SamLiteConfig()
        d = config.d_model
        self.register_pixel_statistics()  # SAM keeps its pixel mean / std as buffers too
        self.image_encoder = ImageEncoder(config)
        self.text_encoder = TextEncoder(config)
        self.text_proj = nn.Sequential(nn.Linear(config.text_dim, d), nn.LayerNorm(d))
        self.fusion = nn.ModuleList(FusionLayer(d, config.num_heads, config.mlp_ratio, config.dropout)
                                    for _ in range(config.fusion_layers))
        self.decoder = QueryDecoder(config)
        num_stats = (ImageNetPrior.num_stats if config.use_imagenet_prior else 0) + \
            (ConceptMapPrior.num_stats if config.concept_map else 0)
        self.heads = PredictionHeads(d, config.mask_dim, num_stats, iou_head=config.geometric_prompts)
        # (modules are created in the order of earlier versions, so a seed gives the same random initialisation)
        self.priors = nn.ModuleDict()  # applied in this order; their statistics are concatenated in it
        if config.use_imagenet_prior:
            self.priors["imagenet"] = ImageNetPrior(d, config.mask_dim, config.prior_temperature)
        if config.concept_map:
            names = concept_name_embeddings(tuple(config.concept_names))
            self.priors["concept_map"] = ConceptMapPrior(d, config.mask_dim, names, config.prior_temperature)
        if config.geometric_prompts:  # points, boxes and exemplars as K/V tokens next to the words
            self.prompt_encoder = GeometricPromptEncoder(d, config.image_size)
        if config.geometry_prior:
            self.priors["geometry"] = GeometryPrior(d, config.mask_dim, config.image_size)
        if load_pretrained:
            self.image_encoder.load_backbone_weights()
        self.image_encoder.freeze_backbone()

    # ---------------------------------------------------------------------------------------------------------
    def encode_image(self, pixel_values: Tensor, output_attentions: bool = False) -> ImageEmbedding:
        """pixel_values [B,3,S,S] (see :meth:`preprocess`) -> the prompt-independent :class:`ImageEmbedding`."""
        return self.image_encoder(pixel_values, output_attentions=output_attentions)

    def encode_prompt(self, prompt: Prompt | list[str]) -> TextEmbedding:
        """The words of P prompt rows -> :class:`TextEmbedding` (cached per prompt while MiniLM is frozen). Rows
        without valid text get zero features, all padding and a zero sentence (their K/V is the prompt encoder's
        learned "no text" token)."""
        if not isinstance(prompt, Prompt):
            prompt = Prompt(list(prompt))
        device = self.text_proj[0].weight.device  # the text encoder may answer on the CPU (ONNX Runtime, its cache)
        valid = prompt.text_valid.tolist()
        if all(valid) or not prompt.is_geometric:
            enc = {k: v.to(device) for k, v in self.text_encoder(prompt.text).items()}
            return TextEmbedding(enc["features"], enc["padding_mask"], enc["sentence"])
        p, dim = len(prompt), self.config.text_dim
        if not any(valid):
            return TextEmbedding(torch.zeros(p, 1, dim, device=device), torch.ones(p, 1, dtype=torch.bool,
                                                                                    device=device),
                                 torch.zeros(p, dim, device=device))
        enc = {k: v.to(device) for k, v in self.text_encoder([t for t, v in zip(prompt.text, valid) if v]).items()}
        rows = prompt.text_valid.nonzero()[:, 0].to(device)
        t = enc["features"].shape[1]
        text = TextEmbedding(enc["features"].new_zeros(p, t, dim), torch.ones(p, t, dtype=torch.bool, device=device),
                             enc["sentence"].new_zeros(p, dim))
        text.features[rows], text.padding_mask[rows], text.sentence[rows] = (enc["features"], enc["padding_mask"],
                                                                           enc["sentence"])
        return text

    def prompt_tokens(self, text: TextEmbedding, prompt: Prompt, image: ImageEmbedding) -> tuple[Tensor, Tensor]:
        """K/V of the fusion layer and of the decoder's prompt cross-attention -> tokens [P, L, D], padding [P, L].

        Text only: the projected words. With geometry: [T words | no-text | G geometry tokens]; the words of rows
        without text are masked and the learned "no text" token stands in for them (masked where there is text).
        The geometry tokens pool exemplar appearance from the prompt-independent image tokens (before priors and
        fusion)."""
        tokens = self.text_proj(text.features.to(image.tokens.device, image.tokens.dtype))
        padding = text.padding_mask.to(tokens.device)
        if not prompt.is_geometric:
            return tokens, padding
        if not self.config.geometric_prompts:
            raise ValueError("points, boxes and exemplars need a model with geometric_prompts (this config has "
                             "geometric_prompts false)")
        p, (h, w) = tokens.shape[0], image.grid
        valid = prompt.text_valid.to(tokens.device)
        geo_tokens, geo_padding = self.prompt_encoder(prompt.geometry(),
                                                      image.tokens.transpose(1, 2).reshape(p, -1, h, w))
        no_text = self.prompt_encoder.no_text_embed.weight.to(tokens.dtype)[None].expand(p, -1, -1)
        return (torch.cat([tokens, no_text, geo_tokens], 1),
                torch.cat([padding | ~valid[:, None], valid[:, None], geo_padding], 1))

    def decode(self, image: ImageEmbedding, prompt: Prompt, text: TextEmbedding, image_index: Tensor | None = None,
               output_attentions: bool = False, aux_outputs: bool | None = None) -> dict:
        """Pair prompt row i with image ``image_index[i]`` (default: i, or 0 for a single image) and decode:
        prompt tokens -> priors -> fusion -> query decoder -> heads. Returns the dict of :meth:`forward` (without
        ``concept_logits``) plus ``prior_maps`` (the ImageNet prior's maps) and ``concept_prompt_map`` [P,S/8,S/8]
        (P(prompt | pixel)) where those priors exist. ``aux_outputs`` (the earlier layers' heads, for the loss):
        default only when gradients are enabled; inference reads the last layer alone."""
        p, n_img = text.features.shape[0], len(image)  # (tensor sizes: traced as such by the ONNX export)
        if image_index is None:
            device = image.tokens.device
            image_index = (torch.arange(p, device=device) if n_img == p
                           else torch.zeros(p, dtype=torch.long, device=device))
        if len(image_index) != p:
            raise ValueError(f"{p} prompts cannot be paired with {n_img} images by an image_index of length "
                             f"{len(image_index)}")
        image = image.select(image_index)
        words, padding = self.prompt_tokens(text, prompt, image)

        tokens, pixel, stats, presence, out = image.tokens, image.pixel_features, [], [], {}
        for name, prior in self.priors.items():
            if not prior.applies_to(prompt):
                continue
            tokens, pixel, added = prior(tokens, pixel, image, text, prompt)
            if added["stats"] is not None:
                stats.append(added["stats"])
                presence.append(added["presence"])
            if name == "imagenet":
                out["prior_maps"] = added["maps"]
            elif added["heat"] is not None:
                out["concept_prompt_map"] = added["heat"]  # P(prompt | pixel) [P, S/8, S/8]
        prior_stats = torch.cat(stats, 1) if stats else None

        fusion_attn = []
        for layer in self.fusion:
            tokens, weights = layer(tokens, image.pos, words, padding, output_attentions)
            fusion_attn.append(LayerAttention(**weights))
        states, decoder_attn = self.decoder(words, padding, tokens, image.pos, sum(presence) if presence else None,
                                            output_attentions)
        if aux_outputs is None:
            aux_outputs = self.training or torch.is_grad_enabled()
        outs = [self.heads(s, pixel, prior_stats) for s in (states if aux_outputs else states[-1:])]
        if image.image_concept is not None:  # the image-level presence votes on each prompt's presence logit
            head = self.image_encoder.image_presence
            vote = head.prompt_logits(image.image_concept, text.sentence.to(image.image_concept.device))
            rows = text_rows(prompt, vote)
            vote = vote if rows is None else vote * rows
            out["image_presence_logits"] = vote
            for o in outs:
                o["presence_logits"] = o["presence_logits"] + head.vote_weight.to(vote.dtype) * vote
        out.update(outs[-1], aux_outputs=outs[:-1])
        if output_attentions:
            out["attentions"] = Attentions(encoder=[LayerAttention(self_attn=a) for a in image.encoder_attentions],
                                           fusion=fusion_attn, decoder=[LayerAttention(**w) for w in decoder_attn],
                                           grid=image.grid)
        return out

    def concept_logits(self, image: ImageEmbedding) -> Tensor:
        """The concept map's dense logits over the vocabulary [B, C+1, S/8, S/8] (background last)."""
        return self.image_encoder.concept_map.logits(image.concept_embedding)

    def forward(self, pixel_values: Tensor, prompt: Prompt | list[str], image_index: Tensor | None = None,
                output_attentions: bool = False, aux_outputs: bool | None = None) -> dict:
        """pixel_values [B,3,S,S] (see :meth:`preprocess`), prompt: P rows (a list of strings: text only),
        image_index [P] -> the dict of the class docstring."""
        if not isinstance(prompt, Prompt):
            prompt = Prompt(list(prompt))
        image = self.encode_image(pixel_values, output_attentions)
        out = self.decode(image, prompt, self.encode_prompt(prompt), image_index, output_attentions, aux_outputs)
        if self.config.concept_map:
            out["concept_logits"] = self.concept_logits(image)
        if image.image_concept is not None:
            out["image_concept_logits"] = self.image_encoder.image_presence.logits(
                image.image_concept, self.image_encoder.concept_map.concept_embeddings)
        return out

    # ---------------------------------------------------------------------------------------------------------
    def packaged_prefixes(self) -> list[str]:
        """State-dict prefixes that come from the pretrained packages unchanged (never written to checkpoints)."""
        prefixes = ["image_encoder." + p + "." for p in self.image_encoder.frozen_backbone_prefixes()]
        if self.config.freeze_text_encoder:
            prefixes.append("text_encoder.bert.")
        return prefixes

    def rename_keys(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        return rename_legacy_keys(state)

    def num_parameters(self) -> dict[str, int]:
        """Parameters per module (trainable and frozen)."""
        groups = {"image_encoder.backbone": self.image_encoder.backbone,
                  "image_encoder (attention + FPN)": [m for n, m in self.image_encoder.named_children() if n != "backbone"],
                  "text_encoder (MiniLM)": self.text_encoder, "text_proj": self.text_proj, "fusion": self.fusion,
                  "decoder": self.decoder, "heads": self.heads}
        if self.config.concept_map:
            groups["image_encoder (attention + FPN)"].remove(self.image_encoder.concept_map)
            groups["concept map"] = self.image_encoder.concept_map
        for name, prior in self.priors.items():
            groups[f"{name} prior projections"] = prior
        if self.config.geometric_prompts:
            groups["prompt encoder (points, boxes, exemplars)"] = self.prompt_encoder
        out = {}
        for name, mods in groups.items():
            mods = mods if isinstance(mods, list) else [mods]
            out[name] = sum(p.numel() for m in mods for p in m.parameters())
        out["total"] = sum(p.numel() for p in self.parameters())
        out["trainable"] = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return out
