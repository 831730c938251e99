"""Shared fixtures: tiny random-weight checkpoints (text only, and with geometric prompts) saved once per test
session, and the demo served from each."""

from pathlib import Path

import pytest


def _save_tiny(directory: Path, **overrides) -> Path:
    """A 'tiny' preset SamLiteModel with random heads (real pretrained backbones), saved to ``directory``."""
    import torch

    from sam_lite import SamLiteConfig, SamLiteModel

    with torch.random.fork_rng():  # the same random heads whatever ran before (tests count on its outputs)
        torch.manual_seed(0)
        SamLiteModel(SamLiteConfig.from_preset("tiny", **overrides)).save_pretrained(directory)
    return directory


def _serve(checkpoint: Path):
    """The Gradio demo on ``checkpoint``, served on 127.0.0.1 at a free port; yields its URL, then closes it."""
    from sam_lite import SamLitePredictor
    from sam_lite.demo import free_port, serve

    port = free_port()
    demo = serve(SamLitePredictor.from_pretrained(checkpoint), "127.0.0.1", port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """Text prompts only (``geometric_prompts`` off, as in the shipped checkpoint)."""
    return _save_tiny(tmp_path_factory.mktemp("sam-lite-tiny"))


@pytest.fixture(scope="session")
def tiny_geometric_checkpoint(tmp_path_factory) -> Path:
    """Also takes points, boxes and exemplars (``geometric_prompts`` on)."""
    return _save_tiny(tmp_path_factory.mktemp("sam-lite-tiny-geometric"), geometric_prompts=True)


@pytest.fixture(scope="session")
def demo_url(tiny_checkpoint) -> str:
    yield from _serve(tiny_checkpoint)


@pytest.fixture(scope="session")
def geometric_demo_url(tiny_geometric_checkpoint) -> str:
    yield from _serve(tiny_geometric_checkpoint)
