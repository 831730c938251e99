"""SamLiteModel: ImageEncoder + TextEncoder + fusion + QueryDecoder + heads, with save/from_pretrained."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import SamLiteConfig
from .concept_map import NUM_CONCEPT_CHANNELS, NUM_CONCEPT_STATS
from .decoder import FusionLayer, QueryDecoder
from .geometry_prior import NUM_GEOMETRY_CHANNELS, geometry_prior
from .heads import PredictionHeads
from .image_encoder import ImageEncoder
from .prior import NUM_PRIOR_CHANNELS, NUM_PRIOR_STATS, ImageNetPrior
from .prompt_encoder import GeometricPromptEncoder
from .text_encoder import TextEncoder

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class SamLiteModel(nn.Module):
    """Text-promptable instance segmentation.

    ``forward(pixel_values [B,3,S,S], prompts: list[str] of length B)`` returns a dict:
    ``pred_logits [B,K]`` match logits, ``pred_masks [B,K,S/4,S/4]`` mask logits, ``pred_boxes [B,K,4]`` normalised
    cxcywh, ``presence_logits [B]``, ``aux_outputs`` (the same keys for each earlier decoder layer) and, with
    ``output_attentions=True``, ``attentions``: name -> weights [B,H,Lq,Lk] per head (rows sum to 1) and
    ``attentions_mean``: name -> [B,Lq,Lk], heads averaged. In decoder attentions query row 0 is the presence token,
    rows 1..K the object queries. With ``geometric_prompts``, ``forward``/``decode`` also take a ``geometry`` dict
    (points, boxes, exemplar boxes per prompt; :mod:`.prompt_encoder`) and the output holds ``pred_iou [B,K]``.
    """

    def __init__(self, config: SamLiteConfig | None = None, load_pretrained: bool = True) -> None:
        super().__init__()
        self.config = config = config or SamLiteConfig()
        d = config.d_model
        self.image_encoder = ImageEncoder(config)
        self.text_encoder = TextEncoder(config)
        self.text_proj = nn.Sequential(nn.Linear(config.text_dim, d), nn.LayerNorm(d))
        self.fusion = nn.ModuleList(FusionLayer(d, config.num_heads, config.mlp_ratio, config.dropout,
                                                config.fusion_self_attention) for _ in range(config.fusion_layers))
        if config.fused_pixel_embedding:
            self.fused_pixel_proj = nn.Conv2d(d, config.mask_dim, 1)
        self.decoder = QueryDecoder(config)
        prior_stats = (NUM_PRIOR_STATS if config.use_imagenet_prior else 0) + \
            (NUM_CONCEPT_STATS if config.concept_map else 0)
        self.heads = PredictionHeads(d, config.mask_dim, prior_stats, iou_head=config.geometric_prompts)
        if config.use_imagenet_prior:
            self.prior = ImageNetPrior(config.prior_temperature)
            self.prior_token_proj = nn.Linear(NUM_PRIOR_CHANNELS, d)
            self.prior_pixel_proj = nn.Conv2d(NUM_PRIOR_CHANNELS, config.mask_dim, 1)
            self.prior_presence_proj = nn.Linear(NUM_PRIOR_STATS, d)
        if config.concept_map:  # the prompt's heat map on the concept map, the same way in
            self.concept_token_proj = nn.Linear(NUM_CONCEPT_CHANNELS, d)
            self.concept_pixel_proj = nn.Conv2d(NUM_CONCEPT_CHANNELS, config.mask_dim, 1)
            self.concept_presence_proj = nn.Linear(NUM_CONCEPT_STATS, d)
        if config.geometric_prompts:  # points, boxes and exemplars as K/V tokens next to the words
            self.prompt_encoder = GeometricPromptEncoder(d, config.image_size)
        if config.geometry_prior:  # ... and drawn as maps; no bias, zero start: text rows are untouched
            self.geometry_token_proj = nn.Linear(NUM_GEOMETRY_CHANNELS, d, bias=False)
            self.geometry_pixel_proj = nn.Conv2d(NUM_GEOMETRY_CHANNELS, config.mask_dim, 1, bias=False)
            nn.init.zeros_(self.geometry_token_proj.weight)
            nn.init.zeros_(self.geometry_pixel_proj.weight)
        if load_pretrained:
            self.image_encoder.load_backbone_weights()
        self.image_encoder.freeze_backbone()

    # ---------------------------------------------------------------------------------------------------------
    def encode_image(self, pixel_values: Tensor, output_attentions: bool = False,
                     prior_pixel_values: Tensor | None = None) -> dict:
        """pixel_values [B,3,S,S] -> the prompt-independent image embedding (what the predictor caches).
        ``prior_pixel_values`` [B,3,P,P]: the images at ``config.prior_image_size``, if that is set."""
        return self.image_encoder(pixel_values, output_attentions=output_attentions,
                                  prior_pixel_values=prior_pixel_values)

    def encode_text(self, prompts: list[str]) -> dict[str, Tensor]:
        """P prompts -> features [P,T,384], padding_mask [P,T], sentence [P,384] (cached when frozen)."""
        return self.text_encoder(prompts)

    def encode_prompts(self, prompts: list[str | None]) -> tuple[dict[str, Tensor], Tensor]:
        """Like :meth:`encode_text`, but a prompt may be empty (``""`` or ``None``: a geometric prompt without text).
        Returns the text dict (an empty row: zero features, all padding, zero sentence; its K/V is the prompt
        encoder's learned "no text" token) and text_valid [P] bool."""
        valid = [isinstance(q, str) and bool(q.strip()) for q in prompts]
        text_valid = torch.tensor(valid, dtype=torch.bool)
        if all(valid):
            return self.encode_text(list(prompts)), text_valid
        p, dim = len(prompts), self.config.text_dim
        if not any(valid):
            return {"features": torch.zeros(p, 1, dim), "padding_mask": torch.ones(p, 1, dtype=torch.bool),
                    "sentence": torch.zeros(p, dim)}, text_valid
        enc = self.encode_text([q for q, v in zip(prompts, valid) if v])
        rows = text_valid.nonzero()[:, 0]
        t = enc["features"].shape[1]
        text = {"features": enc["features"].new_zeros(p, t, dim), "padding_mask": torch.ones(p, t, dtype=torch.bool),
                "sentence": enc["sentence"].new_zeros(p, dim)}
        for k in text:
            text[k][rows] = enc[k]
        return text, text_valid

    def decode(self, image_embedding: dict, text: dict[str, Tensor], image_index: Tensor | None = None,
               output_attentions: bool = False, geometry: dict[str, Tensor] | None = None) -> dict:
        """Pair prompt i with image ``image_index[i]`` (default: i, or 0 for a single image) and decode.

        ``geometry`` (models with ``geometric_prompts``): points, boxes and exemplars per prompt row (see
        :mod:`.prompt_encoder`). Their tokens join the projected words as K/V of the fusion layer and of the
        decoder's prompt cross-attention, after one learned "no text" token that stands in for the words of the
        rows whose ``geometry["text_valid"]`` is False (their text features are ignored, and their ImageNet-prior and
        concept-map channels and statistics are zeroed: they say nothing about a click). K/V of a row is then
        [T words | no-text | G geometry tokens], padding masked. With ``geometry_prior`` the geometry is also drawn
        as dense maps added to the tokens and pixel embedding (:mod:`.geometry_prior`). The output also holds
        ``pred_iou`` [P, K]."""
        p = text["features"].shape[0]
        n_img = image_embedding["tokens"].shape[0]
        if image_index is None:
            image_index = torch.arange(p) if n_img == p else torch.zeros(p, dtype=torch.long)
        if n_img not in (p, 1) and len(image_index) != p:
            raise ValueError(f"{p} prompts cannot be paired with {n_img} images without an image_index")
        tokens = image_embedding["tokens"][image_index]
        pixel = image_embedding["pixel_features"][image_index]
        pos = image_embedding["pos"]
        h, w = image_embedding["grid"]
        text_tokens = self.text_proj(text["features"].to(tokens.dtype))
        padding = text["padding_mask"].to(tokens.device)
        keep = None  # [P] 1 for rows with text, 0 for geometry-only rows (their priors are zeroed)
        if geometry is not None:
            if not self.config.geometric_prompts:
                raise ValueError("points, boxes and exemplars need a model with geometric_prompts (this config has "
                                 "geometric_prompts false)")
            text_valid = geometry.get("text_valid")
            text_valid = (torch.ones(p, dtype=torch.bool, device=tokens.device) if text_valid is None
                          else text_valid.to(tokens.device).bool())
            # roi_align pools from the prompt-independent tokens, before any prior or fusion
            geo_tokens, geo_padding = self.prompt_encoder(geometry, tokens.transpose(1, 2).reshape(p, -1, h, w))
            no_text = self.prompt_encoder.no_text_embed.weight.to(tokens.dtype)[None].expand(p, -1, -1)
            text_tokens = torch.cat([text_tokens, no_text, geo_tokens], 1)
            padding = torch.cat([padding | ~text_valid[:, None], text_valid[:, None], geo_padding], 1)
            keep = text_valid.to(tokens.dtype)

        presence_init = prior_stats = prior_maps = concept_prompt_map = None
        stats, presence_parts = [], []
        if self.config.use_imagenet_prior:
            prior_maps, prior_stats = self.prior(image_embedding["class_logits"][image_index], text["sentence"])
            prior_maps, prior_stats = prior_maps.to(tokens.dtype), prior_stats.to(tokens.dtype)
            if keep is not None:
                prior_maps, prior_stats = prior_maps * keep[:, None, None, None], prior_stats * keep[:, None]
            tokens, pixel = self._add_prior(tokens, pixel, prior_maps, (h, w), self.prior_token_proj,
                                            self.prior_pixel_proj)
            stats.append(prior_stats)
            presence_parts.append(self.prior_presence_proj(prior_stats))
        if self.config.concept_map:
            # the concept embedding is trained by its own dense loss: the decoder reads it detached, so its losses
            # reach only the map's background embedding and temperature (shared with the dense softmax)
            concept = image_embedding["concept_embedding"][image_index].detach()
            maps, concept_stats, concept_prompt_map = self.image_encoder.concept_map.prior(concept, text["sentence"])
            maps, concept_stats = maps.to(tokens.dtype), concept_stats.to(tokens.dtype)
            if keep is not None:
                maps, concept_stats = maps * keep[:, None, None, None], concept_stats * keep[:, None]
                concept_prompt_map = concept_prompt_map * keep[:, None, None]
            tokens, pixel = self._add_prior(tokens, pixel, maps, (h, w), self.concept_token_proj,
                                            self.concept_pixel_proj)
            stats.append(concept_stats)
            presence_parts.append(self.concept_presence_proj(concept_stats))
        if stats:
            prior_stats, presence_init = torch.cat(stats, 1), sum(presence_parts)
        if geometry is not None and self.config.geometry_prior:
            concept = image_embedding.get("concept_embedding")
            concept = concept[image_index].detach() if concept is not None else None
            maps = geometry_prior({k: v.to(tokens.device) for k, v in geometry.items()}, pixel.shape[-1],
                                  self.config.image_size, concept).to(tokens.dtype)
            tokens, pixel = self._add_prior(tokens, pixel, maps, (h, w), self.geometry_token_proj,
                                            self.geometry_pixel_proj)

        attentions: dict[str, Tensor] = {}
        if output_attentions:
            for i, a in enumerate(image_embedding.get("attentions") or []):
                attentions[f"encoder.layer{i}.self_attn"] = a[image_index]
        for i, layer in enumerate(self.fusion):
            tokens, layer_attn = layer(tokens, pos, text_tokens, padding, output_attentions)
            for name, a in layer_attn.items():
                attentions[f"fusion.layer{i}.{name}"] = a
        if self.config.fused_pixel_embedding:  # [P, D, h, w] -> bilinear to stride 4, added per prompt
            fused = self.fused_pixel_proj(tokens.transpose(1, 2).reshape(p, -1, h, w))
            pixel = pixel + F.interpolate(fused, size=pixel.shape[-2:], mode="bilinear", align_corners=False)

        states, dec_attn = self.decoder(text_tokens, padding, tokens, pos, presence_init, output_attentions)
        outs = [self.heads(s, pixel, prior_stats) for s in states]
        out = dict(outs[-1])
        out["aux_outputs"] = outs[:-1]
        if output_attentions:
            for i, layer_attn in enumerate(dec_attn):
                for name, a in layer_attn.items():
                    attentions[f"decoder.layer{i}.{name}"] = a
            out["attentions"] = attentions
            out["attentions_mean"] = {name: a.mean(1) for name, a in attentions.items()}  # heads averaged
            out["grid"] = (h, w)
        if prior_maps is not None:
            out["prior_maps"] = prior_maps
        if concept_prompt_map is not None:
            out["concept_prompt_map"] = concept_prompt_map  # P(prompt | pixel) [P, S/8, S/8]
        return out

    @staticmethod
    def _add_prior(tokens: Tensor, pixel: Tensor, maps: Tensor, grid: tuple[int, int], token_proj: nn.Module,
                   pixel_proj: nn.Module) -> tuple[Tensor, Tensor]:
        """Add prior channels maps [P, C, h', w'] to the tokens [P, N, D] (resized to the token grid) and to the
        pixel embedding [P, Dm, S/4, S/4]."""
        tok = F.interpolate(maps, size=grid, mode="bilinear", align_corners=False)
        tokens = tokens + token_proj(tok.flatten(2).transpose(1, 2))
        pixel = pixel + pixel_proj(F.interpolate(maps, size=pixel.shape[-2:], mode="bilinear", align_corners=False))
        return tokens, pixel

    def concept_logits(self, image_embedding: dict) -> Tensor:
        """The concept map's dense logits over the vocabulary [B, C+1, S/8, S/8] (background last)."""
        return self.image_encoder.concept_map.logits(image_embedding["concept_embedding"])

    def forward(self, pixel_values: Tensor, prompts: list[str], image_index: Tensor | None = None,
                output_attentions: bool = False, geometry: dict[str, Tensor] | None = None) -> dict:
        """With the concept map, the output also holds ``concept_logits`` [B_images, C+1, S/8, S/8]. With
        ``geometry`` a prompt may be empty (a geometric prompt without text; ``text_valid`` is set from the prompts)."""
        image_embedding = self.encode_image(pixel_values, output_attentions)
        if geometry is not None:
            text, text_valid = self.encode_prompts(prompts)
            if "text_valid" in geometry:
                text_valid = text_valid & geometry["text_valid"].cpu().bool()
            geometry = {**geometry, "text_valid": text_valid}
        else:
            text = self.encode_text(prompts)
        out = self.decode(image_embedding, text, image_index, output_attentions, geometry)
        if self.config.concept_map:
            out["concept_logits"] = self.concept_logits(image_embedding)
        return out

    # ---------------------------------------------------------------------------------------------------------
    def packaged_prefixes(self) -> list[str]:
        """State-dict prefixes that come from the pretrained packages unchanged (never written to checkpoints)."""
        prefixes = ["image_encoder." + p + "." for p in self.image_encoder.frozen_backbone_prefixes()]
        if self.config.freeze_text_encoder:
            prefixes.append("text_encoder.bert.")
        return prefixes

    def trainable_state_dict(self) -> dict[str, Tensor]:
        skip = tuple(self.packaged_prefixes())
        return {k: v for k, v in self.state_dict().items() if not k.startswith(skip)}

    def save_pretrained(self, save_directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (packaged backbone weights left out), atomically."""
        from safetensors.torch import save_file

        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
              for k, v in self.trainable_state_dict().items()}
        tmp_w, tmp_c = out / (WEIGHTS_NAME + ".tmp"), out / (CONFIG_NAME + ".tmp")
        save_file(sd, str(tmp_w), metadata={"format": "pt", "model_type": "sam_lite"})
        self.config.save(tmp_c)
        tmp_w.replace(out / WEIGHTS_NAME)
        tmp_c.replace(out / CONFIG_NAME)
        return out

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu") -> "SamLiteModel":
        """Load a directory written by :meth:`save_pretrained`. Errors name the file and what is wrong."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"checkpoint directory not found: {directory}")
        cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not w_path.is_file():
            pickles = sorted(p.name for p in directory.glob("*") if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt"})
            hint = f" (found {pickles}: pickle files are never loaded, only safetensors)" if pickles else ""
            raise FileNotFoundError(f"weights file not found: {w_path}{hint}")
        config = SamLiteConfig.load(cfg_path)
        try:
            state = load_file(str(w_path), device=map_location)
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise ValueError(f"{w_path} is not a readable safetensors file (truncated or corrupt?): {e}") from e
        model = cls(config)
        model.load_trainable_weights(state, f"{w_path} does not match {cfg_path}")
        return model.eval()

    def load_trainable_weights(self, state: dict[str, Tensor], source: str, allow_missing: bool = False) -> list[str]:
        """Load a :meth:`save_pretrained` tensor dict into the trainable tensors (cast to their dtype). ValueError
        starting with ``source`` when a tensor is unexpected, has another shape or (unless ``allow_missing``: a
        fine-tune adding modules) is missing. Returns the names of the missing tensors."""
        expected = self.trainable_state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if unexpected or (missing and not allow_missing):
            raise ValueError(f"{source}: {len(missing)} missing tensors {missing[:5]}, "
                             f"{len(unexpected)} unexpected tensors {unexpected[:5]}")
        for k, v in state.items():
            if v.shape != expected[k].shape:
                raise ValueError(f"{source}: tensor {k} has shape {tuple(v.shape)}, the config needs "
                                 f"{tuple(expected[k].shape)}")
        self.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=False)
        return missing

    def num_parameters(self) -> dict[str, int]:
        """Parameters per module (trainable and frozen)."""
        groups = {"image_encoder.backbone": self.image_encoder.backbone,
                  "image_encoder (attention + FPN)": [m for n, m in self.image_encoder.named_children() if n != "backbone"],
                  "text_encoder (MiniLM)": self.text_encoder, "text_proj": self.text_proj, "fusion": self.fusion,
                  "decoder": self.decoder, "heads": self.heads}
        if self.config.fused_pixel_embedding:
            groups["fusion"] = [self.fusion, self.fused_pixel_proj]
        if self.config.use_imagenet_prior:
            groups["prior projections"] = [self.prior_token_proj, self.prior_pixel_proj, self.prior_presence_proj]
        if self.config.concept_map:
            groups["image_encoder (attention + FPN)"].remove(self.image_encoder.concept_map)
            groups["concept map"] = [self.image_encoder.concept_map, self.concept_token_proj,
                                     self.concept_pixel_proj, self.concept_presence_proj]
        out = {}
        for name, mods in groups.items():
            mods = mods if isinstance(mods, list) else [mods]
            out[name] = sum(p.numel() for m in mods for p in m.parameters())
        out["total"] = sum(p.numel() for p in self.parameters())
        out["trainable"] = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return out
