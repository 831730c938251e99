"""MiniLM's transformer in ONNX Runtime, for new prompts at inference time.

For one short prompt (batch 1, a few tokens) PyTorch's eager BertModel spends most of its ~13 ms in per-op overhead;
the same graph in ONNX Runtime takes ~4-5 ms on one thread (hidden states within ~3e-6 of PyTorch's, the pooled
sentence within ~2e-7). The graph is exported once from the live weights with ``torch.onnx.export`` (~3 s) and kept
in a cache directory (``$SAM_LITE_CACHE``, else ``~/.cache/sam-lite``) under a fingerprint of those weights, so later
processes only open a session (~0.15 s, on the first new prompt). ``SAM_LITE_TEXT_BACKEND=torch`` turns it off;
without onnxruntime (or when the export fails) :class:`~sam_lite.modeling.text_encoder.TextEncoder` stays in PyTorch.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

EXPORT_FORMAT = 1  # bump when the exported graph changes (names, opset, adapter)
OPSET = 17


def backend_enabled() -> bool:
    """False when ``SAM_LITE_TEXT_BACKEND=torch`` or onnxruntime is not installed."""
    if os.environ.get("SAM_LITE_TEXT_BACKEND", "").lower() == "torch":
        return False
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cache_dir() -> Path:
    return Path(os.environ.get("SAM_LITE_CACHE") or Path.home() / ".cache" / "sam-lite")


@torch.no_grad()
def weights_fingerprint(bert: nn.Module, per_tensor: int = 16384) -> str:
    """A hash of every tensor's name, shape, dtype and bytes; a tensor with more than ``per_tensor`` elements
    contributes an evenly strided sample of about that many (fine-tuning moves every weight, and hashing all 90 MB
    would cost ~0.5 s per process). ~20 ms."""
    h = hashlib.blake2b(f"minilm-onnx-v{EXPORT_FORMAT}-opset{OPSET}".encode(), digest_size=10)
    for name, t in bert.state_dict().items():
        flat = t.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // per_tensor)].contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(sample.cpu().numpy().tobytes())
    return h.hexdigest()


class _HiddenStates(nn.Module):
    """input_ids [P, T], attention_mask [P, T] (int64) -> last_hidden_state [P, T, 384]."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def export_minilm(bert: nn.Module, path: Path) -> Path:
    """Export ``bert`` (eval, float32) to ``path`` (written to a temporary file, then renamed: concurrent processes
    never see half a file)."""
    import copy

    path.parent.mkdir(parents=True, exist_ok=True)
    module = _HiddenStates(copy.deepcopy(bert).float().eval())
    ids = torch.tensor([[101, 1037, 2417, 2482, 102]])
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (ids, torch.ones_like(ids)), tmp, input_names=["input_ids", "attention_mask"],
                              output_names=["last_hidden_state"], opset_version=OPSET, do_constant_folding=True,
                              dynamic_axes={"input_ids": {0: "P", 1: "T"}, "attention_mask": {0: "P", 1: "T"},
                                            "last_hidden_state": {0: "P", 1: "T"}}, dynamo=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class OnnxMiniLM:
    """An ONNX Runtime session for ``bert``'s weights (exported on first use, then read from the cache)."""

    def __init__(self, bert: nn.Module, threads: int = 1) -> None:
        import onnxruntime as ort

        path = cache_dir() / f"minilm-{weights_fingerprint(bert)}.onnx"
        if not path.is_file():
            export_minilm(bert, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # idle onnxruntime threads spin by default and would take the cores PyTorch needs next
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """input_ids, attention_mask [P, T] -> last_hidden_state float32 [P, T, 384] (a CPU tensor)."""
        out = self.session.run(None, {"input_ids": input_ids.long().numpy(),
                                      "attention_mask": attention_mask.long().numpy()})[0]
        return torch.from_numpy(out)
