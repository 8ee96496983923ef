"""The held-out concepts and the pixel judges that read them (world/concepts.py, world/concept_judges.py)."""

import numpy as np
import pytest
import torch

from steer.benchmarks.personalize_world import score
from steer.benchmarks.personalize_world_methods import KINDS, prompts
from steer.errors import SteerError
from steer.world.concept_judges import IdentityJudge, blobs
from steer.world.concepts import CONFIRMATION_CONCEPTS, HELDOUT_CONCEPTS, concept, photo_backgrounds, photos
from steer.world.judges import load_judges
from steer.world.model import MODEL_DIR
from steer.world.render import JUDGE_STYLE, render
from steer.world.scene import COLORS, SHAPES, SIZE_RADII, Scene, ShapeSpec


@pytest.fixture(scope="module")
def judges():
    return load_judges(MODEL_DIR / "judge")


def test_every_concept_is_new_to_the_world_and_named_by_a_world_category():
    assert len(HELDOUT_CONCEPTS) >= 6 and len(CONFIRMATION_CONCEPTS) >= 4
    for item in HELDOUT_CONCEPTS + CONFIRMATION_CONCEPTS:
        assert item.name not in SHAPES and item.category in SHAPES
        assert all(color in COLORS for color in item.colors)


def test_photos_are_varied_renders_on_backgrounds_that_are_not_the_concept():
    for item in HELDOUT_CONCEPTS:
        shots = photos(item)
        assert len(shots) == 5 and all(shot.shape == (3, 32, 32) for shot in shots)
        assert not set(photo_backgrounds(item)) & set(item.colors)
        assert len({shot.numpy().tobytes() for shot in shots}) == 5
    with pytest.raises(SteerError, match="its own colour"):
        HELDOUT_CONCEPTS[0].render(HELDOUT_CONCEPTS[0].color)
    with pytest.raises(SteerError, match="unknown held-out concept"):
        concept("dog")


def _world_shape(shape: str, color: str, background: str = "white", place: str = "center", size: str = "large") -> torch.Tensor:
    pixels = render(Scene((ShapeSpec(shape, color, size, place),), background), JUDGE_STYLE, np.random.default_rng(0))
    return torch.from_numpy(pixels).permute(2, 0, 1)


def test_identity_tells_each_concept_from_every_world_shape_in_its_colour(judges):
    for item in HELDOUT_CONCEPTS + CONFIRMATION_CONCEPTS:
        judge = IdentityJudge.build(item, judges, photos(item))
        # Other renders than the photos: judge style, other places, sizes, angles and backgrounds.
        # Backgrounds other than the concept's colours: black, then green (blue for a green concept).
        second = "blue" if "green" in item.colors else "green"
        own = torch.stack(
            [item.render("black", 0.3, 0.7, 0.2, 20, style=JUDGE_STYLE), item.render(second, 0.6, 0.4, 0.26, -20, style=JUDGE_STYLE)]
        )
        others = torch.stack([_world_shape(shape, item.color, "black") for shape in SHAPES])
        own_identity, other_identity = judge.read(own)["identity"], judge.read(others)["identity"]
        assert min(own_identity) > max(other_identity), item.name
        assert min(own_identity) > 0.7


def test_blobs_count_the_things_in_an_image():
    one = _world_shape("star", "red", "black", place="left", size="small")
    two = torch.maximum(one, _world_shape("star", "red", "black", place="right", size="small"))  # on black, the maximum keeps both
    assert [len(found) for found in blobs(torch.stack([one, two]))[1]] == [1, 2]
    assert blobs(torch.ones(1, 3, 32, 32))[1] == [[]]


def _on(item, background, **where):
    return item.render(background, style=JUDGE_STYLE, **where)


def test_the_prompts_ask_for_what_the_photos_never_show():
    for item in HELDOUT_CONCEPTS:
        asked = prompts(item)
        assert [p.kind for p in asked] == [kind for kind in KINDS for _ in range(4)]
        for prompt in asked:
            assert prompt.text.count("[V]") == (2 if prompt.kind == "two" else 1)
            assert prompt.background not in set(item.colors) | set(photo_backgrounds(item))
            assert prompt.second_color not in item.colors


def test_score_reads_obeyed_and_disobeyed_prompts_from_pixels(judges):
    item = HELDOUT_CONCEPTS[0]
    judge = IdentityJudge.build(item, judges, photos(item))
    asked = {}
    for prompt in prompts(item):
        asked.setdefault(prompt.kind, prompt)  # the first of each kind (its second shape is white, not black)
    corners = {"top left": (0.25, 0.25), "top right": (0.75, 0.25), "bottom left": (0.25, 0.75), "bottom right": (0.75, 0.75)}
    place = asked["place"].place
    # Pairs are drawn on black and merged by the maximum, which keeps both shapes.
    left = _on(item, "black", cx=0.25, radius=SIZE_RADII["small"])
    pair = torch.maximum(left, _on(item, "black", cx=0.75, radius=SIZE_RADII["small"]))
    second = torch.maximum(left, _world_shape("star", asked["second"].second_color, "black", place="right", size="small"))
    cases = [
        ("background", _on(item, asked["background"].background), _on(item, photo_backgrounds(item)[0])),
        ("place", _on(item, "white", cx=corners[place][0], cy=corners[place][1], radius=SIZE_RADII["small"]), _on(item, "white")),
        ("size", _on(item, "white", radius=SIZE_RADII["small"]), _on(item, "white")),
        ("two", pair, left),
        ("second", second, pair),
    ]
    for kind, obeyed, disobeyed in cases:
        read = score(torch.stack([obeyed, disobeyed]), [asked[kind]] * 2, judge, judges)
        assert read[kind]["obeyed"] == [1.0, 0.0], kind
    read = score(torch.stack([second]), [asked["second"]], judge, judges)
    assert read["second"]["other_shape_leak"][0] < 0.1
    leaking = torch.maximum(left, _world_shape("star", item.color, "black", place="right", size="small"))
    assert score(torch.stack([leaking]), [asked["second"]], judge, judges)["second"]["other_shape_leak"][0] > 0.5
