"""The world's scenes, renders, tokenizer and analytic judges (no trained weights needed)."""

import numpy as np
import pytest
import torch

from steer.errors import SteerError
from steer.world import judges as J
from steer.world.data import SPLIT_SEEDS, load_split, scenes_for
from steer.world.model import build_tokenizer
from steer.world.render import JUDGE_STYLE, TRAIN_STYLE, render
from steer.world.scene import COLOR_NAMES, PLACES, SHAPES, Scene, ShapeSpec, caption, random_scene, rgb01, vocabulary


def test_captions_say_every_attribute_in_three_phrasings():
    scene = Scene((ShapeSpec("star", "red", "large", "top left", striped=True),), "blue")
    assert caption(scene, 0) == "a large striped red star at the top left on a blue background"
    assert caption(scene, 1) == "a large striped red star at the top left, blue background"
    assert caption(scene, 2) == "a blue background with a large striped red star at the top left"
    two = Scene((ShapeSpec("star", "red", "small", "center"), ShapeSpec("ring", "white", "large", "bottom")), "black")
    assert caption(two) == "a small red star in the center and a large white ring at the bottom on a black background"
    with pytest.raises(SteerError, match="phrasing"):
        caption(scene, 3)


def test_bad_attributes_are_refused_with_the_allowed_values():
    with pytest.raises(SteerError, match="unknown shape 'blob'.*circle"):
        ShapeSpec("blob", "red", "small", "top")
    with pytest.raises(SteerError, match="invisible"):
        Scene((ShapeSpec("star", "red", "small", "top"),), "red")


def test_random_scenes_are_seeded_and_use_the_whole_vocabulary():
    a, b = scenes_for("generator", 400), scenes_for("generator", 400)
    assert [s.record() for s in a] == [s.record() for s in b]
    assert (
        {s.main.shape for s in a} == set(SHAPES)
        and {s.main.color for s in a} == set(COLOR_NAMES)
        and {s.main.place for s in a} == set(PLACES)
    )
    assert all(s.main.color != s.background for s in a)
    rng = np.random.default_rng(0)
    assert any(len(random_scene(rng, two_shapes=1.0).shapes) == 2 for _ in range(5))


def test_splits_share_no_scene():
    records = {split: {str(s.record()) + str(s.jitter) for s in scenes_for(split, 300)} for split in SPLIT_SEEDS}
    names = list(records)
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            assert not records[x] & records[y], (x, y)


def test_render_draws_the_shape_in_its_colour_on_the_background():
    scene = Scene((ShapeSpec("square", "red", "large", "center"),), "blue", (0.0, 0.0, 1.0, 0.0))
    image = render(scene)
    assert image.shape == (32, 32, 3) and image.dtype == np.float32
    assert np.allclose(image[16, 16], rgb01("red"), atol=1e-6)
    assert np.allclose(image[1, 1], rgb01("blue"), atol=1e-6)
    striped = render(Scene((ShapeSpec("square", "red", "large", "center", striped=True),), "blue", (0.0, 0.0, 1.0, 0.0)))
    column = striped[10:22, 16]
    assert column.min(0)[0] < 0.6 * column.max(0)[0]  # bands of the colour and its shade
    assert not np.allclose(render(scene, JUDGE_STYLE, np.random.default_rng(0)), render(scene, TRAIN_STYLE))


def test_tokenizer_keeps_every_world_word_whole(tmp_path):
    tokenizer = build_tokenizer(tmp_path / "tok")
    for word in vocabulary():
        assert tokenizer.tokenize(word) == [f"{word}</w>"], word
    ids = tokenizer("a red star").input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id and len(ids) == 5
    assert len(tokenizer.tokenize("zebra")) > 1  # unknown words fall back to pieces, never fail


def test_analytic_judges_read_colour_background_and_place_of_renders():
    data = load_split("heldout", 60)
    soft, hard = J.foreground(data.images)
    assert hard.flatten(1).sum(1).min() >= J.MIN_FOREGROUND
    bg = [COLOR_NAMES[int(k)] for k in J.nearest_color(J.background_rgb(data.images))]
    assert bg == [s.background for s in data.scenes]
    masks = J.normalized_masks(soft, hard)
    assert masks.shape == (60, J.MASK_SIDE**2) and float(masks.max()) <= 1.0
    empty = torch.ones(2, 3, 32, 32) * torch.tensor(rgb01("green")).view(1, 3, 1, 1)
    assert J.normalized_masks(*J.foreground(empty)).abs().sum() == 0
