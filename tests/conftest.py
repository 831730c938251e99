"""Shared fixtures: one tiny random-weight checkpoint per test session, and the demo served from it."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A 'tiny' preset SamLiteModel with random heads (real pretrained backbones), saved once per session."""
    import torch

    from sam_lite import SamLiteConfig, SamLiteModel

    directory = tmp_path_factory.mktemp("sam-lite-tiny")
    with torch.random.fork_rng():  # the same random heads whatever ran before (tests count on its outputs)
        torch.manual_seed(0)
        SamLiteModel(SamLiteConfig.from_preset("tiny")).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def demo_url(tiny_checkpoint) -> str:
    """The Gradio demo on the tiny checkpoint, served on 127.0.0.1 at a free port; closed after the session."""
    from sam_lite import SamLitePredictor
    from sam_lite.demo import free_port, serve

    port = free_port()
    demo = serve(SamLitePredictor.from_pretrained(tiny_checkpoint), "127.0.0.1", port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
