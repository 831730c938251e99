"""Save / load shared by every model family (HF ``PreTrainedModel`` style): ``config.json`` + ``model.safetensors``
holding only the weights trained here (the pretrained backbones come from their packages), and the optimiser's
parameter groups (nanoGPT's ``configure_optimizers``).

A family sets ``config_class``, ``model_type`` and implements :meth:`packaged_prefixes`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class PreTrainedModel(nn.Module):
    config_class: type
    model_type: str
    backbone_prefix = "image_encoder.backbone."  # parameters fine-tuned at a smaller learning rate

    def preprocess(self, images: Tensor) -> Tensor:
        """images [B,3,h,w] float 0-255 (longest side <= S, as the processor resizes) -> [B,3,S,S] scaled by the
        ``pixel_mean`` / ``pixel_std`` buffers and padded bottom/right with zeros (SAM's scheme)."""
        x = (images.float() - self.pixel_mean) / self.pixel_std
        s = self.config.image_size
        return torch.nn.functional.pad(x, (0, s - x.shape[-1], 0, s - x.shape[-2]))

    def register_pixel_statistics(self, mean: float = 127.0, std: float = 128.0) -> None:
        """The pixel mean / std as non-persistent buffers (Lite models take inputs scaled to [-1, 1])."""
        self.register_buffer("pixel_mean", torch.full((3, 1, 1), mean), persistent=False)
        self.register_buffer("pixel_std", torch.full((3, 1, 1), std), persistent=False)

    def packaged_prefixes(self) -> list[str]:
        """State-dict prefixes that come from the pretrained packages unchanged (never written to checkpoints)."""
        raise NotImplementedError

    def rename_keys(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Tensor names of older checkpoints -> today's (default: unchanged)."""
        return state

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
        save_file(sd, str(tmp_w), metadata={"format": "pt", "model_type": self.model_type})
        self.config.save(tmp_c)
        tmp_w.replace(out / WEIGHTS_NAME)
        tmp_c.replace(out / CONFIG_NAME)
        return out

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu"):
        """Load a directory written by :meth:`save_pretrained`. Errors name the file and what is wrong."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"checkpoint directory not found: {directory}")
        cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        config = cls.config_class.load(cfg_path)
        if not w_path.is_file():
            pickles = sorted(p.name for p in directory.glob("*") if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt"})
            hint = f" (found {pickles}: pickle files are never loaded, only safetensors)" if pickles else ""
            raise FileNotFoundError(f"weights file not found: {w_path}{hint}")
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
        state = self.rename_keys(state)
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

    def configure_optimizers(self, weight_decay: float, learning_rate: float, backbone_lr_scale: float = 0.1
                             ) -> torch.optim.AdamW:
        """AdamW over the parameters that require grad: pretrained backbone stages at ``learning_rate *
        backbone_lr_scale`` (DETR), no weight decay on biases and norms (tensors with fewer than 2 dims)."""
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        groups = []
        for is_backbone in (False, True):
            lr = learning_rate * (backbone_lr_scale if is_backbone else 1.0)
            mine = [p for n, p in named if n.startswith(self.backbone_prefix) == is_backbone]
            groups += [{"params": [p for p in mine if p.ndim >= 2], "weight_decay": weight_decay, "lr": lr},
                       {"params": [p for p in mine if p.ndim < 2], "weight_decay": 0.0, "lr": lr}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=learning_rate)
