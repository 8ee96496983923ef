"""Fixtures several unit-test modules share."""

import pytest
from unit.tiny_models import write_tiny_clip

from steer.guidance.hf_models import load_guidance_model


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """The tiny Hugging Face CLIP folder of tiny_models.py, loaded as a guidance model."""
    folder = tmp_path_factory.mktemp("models") / "tiny-clip"
    write_tiny_clip(folder)
    return load_guidance_model(folder)
