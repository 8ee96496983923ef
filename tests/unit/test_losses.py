import pytest
import torch

from steer.errors import SteerError
from steer.guidance.losses.base import Window
from steer.guidance.losses.color import ReferenceColorLoss, TargetColorLoss
from steer.guidance.losses.combine import CombinedLoss, LossTerm
from steer.guidance.losses.edge import EdgeLoss, edge_map


def _solid(rgb, size=16, batch=1):
    return torch.tensor(rgb).view(1, 3, 1, 1).expand(batch, 3, size, size).clone()


def test_target_colour_loss_is_zero_at_the_target_and_grows_away_from_it():
    loss = TargetColorLoss((1.0, 0.0, 0.0))
    values = loss(torch.cat([_solid((1.0, 0.0, 0.0)), _solid((0.5, 0.0, 0.0)), _solid((0.0, 1.0, 1.0))]))
    assert values[0] == 0 and 0 < values[1] < values[2]


def test_average_match_only_looks_at_the_mean_colour():
    half = torch.zeros(1, 3, 16, 16)
    half[:, 0, :, :8] = 1.0  # left half red, right half black: mean colour (0.5, 0, 0)
    assert float(TargetColorLoss((0.5, 0.0, 0.0), match="average")(half)) < 1e-6
    assert float(TargetColorLoss((0.5, 0.0, 0.0), match="pixels")(half)) > 0.2


def test_reference_colour_loss_matches_mean_and_spread():
    torch.manual_seed(0)
    reference = torch.rand(1, 3, 32, 32) * 0.2 + torch.tensor([0.7, 0.1, 0.1]).view(1, 3, 1, 1)
    loss = ReferenceColorLoss(reference)
    similar = torch.rand(1, 3, 16, 16) * 0.2 + torch.tensor([0.7, 0.1, 0.1]).view(1, 3, 1, 1)
    different = torch.rand(1, 3, 16, 16)
    assert float(loss(similar)) < 0.01 < float(loss(different))


def test_edge_loss_is_zero_for_the_reference_itself_and_positive_otherwise():
    torch.manual_seed(0)
    reference = torch.zeros(1, 3, 32, 32)
    reference[:, :, 8:24, 8:24] = 1.0
    loss = EdgeLoss(reference)
    assert float(loss(reference)) < 1e-6
    shifted = torch.roll(reference, shifts=6, dims=3)
    assert float(loss(shifted)) > 0.1


def test_edge_loss_resizes_the_reference_to_the_sample():
    reference = torch.zeros(1, 3, 64, 64)
    reference[:, :, 16:48, 16:48] = 1.0
    values = EdgeLoss(reference)(torch.rand(3, 3, 16, 16))
    assert values.shape == (3,)


def test_image_losses_give_finite_nonzero_gradients():
    reference = torch.rand(1, 3, 16, 16)
    for loss in (TargetColorLoss((0.2, 0.4, 0.9)), ReferenceColorLoss(reference), EdgeLoss(reference)):
        images = torch.rand(2, 3, 16, 16, requires_grad=True)
        (grad,) = torch.autograd.grad(loss(images).sum(), images)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, loss.name


def test_edge_map_is_contrast_invariant():
    img = torch.rand(1, 3, 16, 16)
    assert torch.allclose(edge_map(img), edge_map(img * 0.5), atol=1e-3)


def test_combined_loss_is_the_weighted_sum():
    a, b = TargetColorLoss((1.0, 0.0, 0.0)), TargetColorLoss((0.0, 0.0, 1.0))
    images = torch.rand(2, 3, 8, 8)
    combined = CombinedLoss([LossTerm(a, 2.0), LossTerm(b, 0.5)])
    assert torch.allclose(combined(images), 2.0 * a(images) + 0.5 * b(images))
    assert CombinedLoss([LossTerm(a, 1.0, Window(0.0, 0.2))]).at(0.5) is None


def test_bad_loss_inputs_say_what_to_change():
    with pytest.raises(SteerError, match="three values"):
        TargetColorLoss((2.0, 0.0, 0.0))
    with pytest.raises(SteerError, match="1 or 3 channels"):
        EdgeLoss(torch.rand(1, 4, 8, 8))
    with pytest.raises(SteerError, match="at least one"):
        CombinedLoss([])


def test_logits_loss_uses_each_samples_target_and_tiles_over_augmented_copies():
    from steer.guidance.losses.logits import LogitsLoss

    def classifier(images):  # class k's logit = 10·mean of channel k
        return 10.0 * images.mean(dim=(2, 3))

    loss = LogitsLoss(classifier, targets=[0, 2])
    images = torch.zeros(2, 3, 4, 4)
    images[0, 0] = 1.0  # sample 0 looks like class 0
    images[1, 1] = 1.0  # sample 1 looks like class 1, but its target is 2
    values = loss(images)
    assert values[0] < 0.01 and values[1] > 5.0
    copies = loss(images.repeat(3, 1, 1, 1))  # copy-major, as augmentation batches are
    assert torch.allclose(copies.view(3, 2), values.expand(3, 2))
    with pytest.raises(SteerError, match="one target per image"):
        loss(torch.zeros(3, 3, 4, 4))
