import torch
from unit.toy import CountingLoss

from steer.guidance.augment import AugmentConfig, RandomAugment, augmented_loss
from steer.guidance.losses.color import TargetColorLoss


def test_copies_differ_from_each_other_and_from_the_input():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32)
    views = RandomAugment(AugmentConfig(copies=10))(images)
    assert views.shape == (20, 3, 32, 32)
    first_image_views = views.view(10, 2, 3, 32, 32)[:, 0]
    for a in range(10):
        for b in range(a + 1, 10):
            assert not torch.allclose(first_image_views[a], first_image_views[b]), (a, b)
    assert not torch.allclose(first_image_views[0], images[0])


def test_the_loss_runs_once_per_step_with_a_batch_of_copies_times_samples():
    loss = CountingLoss(TargetColorLoss((1.0, 0.0, 0.0)))
    images = torch.rand(3, 3, 16, 16)
    values = augmented_loss(loss, images, RandomAugment(AugmentConfig(copies=10)))
    assert loss.batch_sizes == [30]
    assert values.shape == (3,)


def test_augmented_loss_is_the_mean_of_the_per_copy_losses():
    torch.manual_seed(3)
    images = torch.rand(2, 3, 16, 16)
    augment = RandomAugment(AugmentConfig(copies=4))
    loss = TargetColorLoss((0.0, 1.0, 0.0))
    torch.manual_seed(7)
    values = augmented_loss(loss, images, augment)
    torch.manual_seed(7)
    views = augment(images)
    expected = loss(views).view(4, 2).mean(0)
    assert torch.allclose(values, expected)


def test_gradient_flows_through_every_augmentation():
    images = torch.rand(2, 3, 16, 16, requires_grad=True)
    values = augmented_loss(TargetColorLoss((1.0, 0.0, 0.0)), images, RandomAugment(AugmentConfig(copies=6)))
    (grad,) = torch.autograd.grad(values.sum(), images)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_grayscale_images_are_supported():
    views = RandomAugment(AugmentConfig(copies=3))(torch.rand(2, 1, 16, 16))
    assert views.shape == (6, 1, 16, 16)


def test_zero_copies_means_the_plain_loss():
    loss = CountingLoss(TargetColorLoss((1.0, 0.0, 0.0)))
    images = torch.rand(2, 3, 8, 8)
    assert torch.allclose(augmented_loss(loss, images, None), loss.inner(images))
