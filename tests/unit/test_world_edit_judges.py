"""The edit judges (stripes, colour in a region, distances, foreground overlap) and the committed reward head."""

import pytest
import torch

from steer.guidance.hf_models import load_guidance_model
from steer.guidance.losses.clip import HFCLIPEncoder
from steer.guidance.losses.reward import RewardLoss, load_reward_head
from steer.world import edit_judges as ej
from steer.world import model as wm
from steer.world.data import load_split
from steer.world.render import render
from steer.world.scene import COLOR_NAMES, SHAPES, Scene, ShapeSpec, rgb01
from steer.world.train_reward import FACTS_FILE, HEAD_FILE


def _images(scenes) -> torch.Tensor:
    return torch.stack([torch.from_numpy(render(s)).permute(2, 0, 1) for s in scenes])


def _scenes(striped: bool) -> list[Scene]:
    out = []
    for k, color in enumerate(c for c in COLOR_NAMES if c not in ej.WEAK_STRIPE_COLORS):
        for j, shape in enumerate(SHAPES):
            background = next(b for b in ("white", "blue", "black", "orange")[(k + j) % 4 :] + ("green",) if b != color)
            out.append(Scene((ShapeSpec(shape, color, ("small", "large")[j % 2], "center", striped),), background))
    return out


def test_the_stripe_judge_reads_striped_renders_as_striped_and_solid_ones_as_solid():
    striped, solid = ej.read_striped(_images(_scenes(True))), ej.read_striped(_images(_scenes(False)))
    assert sum(striped) / len(striped) >= 0.95, [s for s, said in zip(_scenes(True), striped) if not said]
    assert sum(solid) / len(solid) <= 0.05, [s for s, said in zip(_scenes(False), solid) if said]


def test_the_stripe_threshold_is_the_judge_splits_best_and_reads_the_heldout_split():
    threshold, balanced = ej.stripe_threshold_from_judge_split()
    assert threshold == ej.STRIPE_THRESHOLD and balanced > 0.9
    heldout = load_split("heldout", 400)
    assert ej.stripe_accuracy(heldout.images, [s.main.striped for s in heldout.scenes])["accuracy"] >= 0.97


def test_best_threshold_separates_two_groups_and_an_empty_image_has_no_stripes():
    shares = torch.tensor([0.1, 0.2, 0.15, 0.6, 0.7])
    threshold, balanced = ej.best_threshold(shares, torch.tensor([False, False, False, True, True]))
    assert 0.2 <= threshold < 0.6 and balanced == 1.0
    assert ej.stripe_shares(torch.full((1, 3, 32, 32), 0.5)).tolist() == [0.0]


def test_palette_share_counts_the_regions_pixels_of_a_colour():
    images = torch.zeros(2, 3, 32, 32)
    images[:] = torch.tensor(rgb01("blue")).view(3, 1, 1)
    images[0, :, :, :16] = torch.tensor(rgb01("yellow")).view(3, 1)[:, :, None]
    left = ej.left_half()
    assert ej.palette_share(images, left, "yellow").tolist() == [1.0, 0.0]
    assert ej.palette_share(images, torch.ones(32, 32), "yellow").tolist() == [0.5, 0.0]
    assert ej.palette_share(images, 1 - left, "blue").tolist() == [1.0, 1.0]


def test_mean_abs_distance_is_per_region_and_per_sample():
    a, b = torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 32, 32)
    b[0, 0, :, 16:] = 0.6  # one channel of the right half
    left = ej.left_half()
    assert ej.mean_abs_distance(a, b, left).tolist() == [0.0, 0.0]
    assert ej.mean_abs_distance(a, b, 1 - left)[0] == pytest.approx(0.2)
    assert ej.mean_abs_distance(a, b)[0] == pytest.approx(0.1)


def test_foreground_iou_of_the_same_a_shifted_and_another_shape():
    base = Scene((ShapeSpec("square", "red", "large", "center"),), "white")
    same, moved = _images([base, base]), _images([base, Scene((ShapeSpec("square", "red", "large", "top left"),), "white")])
    iou = ej.foreground_iou(same, moved)
    assert iou[0] == 1.0 and 0.0 < iou[1] < 0.5
    far = _images([Scene((ShapeSpec("circle", "red", "small", "bottom right"),), "white")])
    assert ej.foreground_iou(_images([Scene((ShapeSpec("circle", "red", "small", "top left"),), "white")]), far)[0] == 0.0


def test_the_committed_reward_head_is_a_linear_head_of_the_guide_clip_that_prefers_stripes():
    folder = wm.MODEL_DIR / "guides" / "reward"
    head = load_reward_head(folder / HEAD_FILE)
    assert len(head.layers) == 1 and (folder / FACTS_FILE).is_file()
    loss = RewardLoss(HFCLIPEncoder(load_guidance_model(wm.MODEL_DIR / "guides" / "clip")), head)
    with torch.no_grad():
        striped, solid = loss.score(_images(_scenes(True))), loss.score(_images(_scenes(False)))
    assert float((striped > 0).float().mean()) >= 0.8 and float((solid < 0).float().mean()) >= 0.8
