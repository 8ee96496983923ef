import torch

from steer.guidance.step_rules import StepContext, cap_displacement, constant, normalized, per_sample_norm, polyak


def _context(batch=3, shape=(4, 8, 8)):
    torch.manual_seed(1)
    eps = torch.randn(batch, *shape)
    return StepContext(eps=eps, denoise_step=0.1 * torch.randn(batch, *shape), noise_level=torch.tensor(1.0))


def test_polyak_step_equals_the_formula_per_sample():
    ctx = _context()
    grad = torch.randn(3, 4, 8, 8) * torch.tensor([0.1, 1.0, 10.0]).view(3, 1, 1, 1)
    eta = 0.7
    got = polyak(grad, ctx, eta, 1e-8)
    for i in range(3):
        expected = eta * ctx.eps[i].norm() / grad[i].norm() ** 2 * grad[i]
        assert torch.allclose(got[i], expected, rtol=1e-5), i


def test_polyak_is_not_batch_global():
    ctx = _context()
    grad = torch.randn(3, 4, 8, 8)
    alone = polyak(grad[:1], StepContext(ctx.eps[:1], ctx.denoise_step[:1], ctx.noise_level), 1.0, 1e-8)
    grad_big_neighbour = grad.clone()
    grad_big_neighbour[1:] *= 1000.0
    together = polyak(grad_big_neighbour, ctx, 1.0, 1e-8)
    assert torch.allclose(alone[0], together[0], rtol=1e-5)


def test_polyak_guard_keeps_a_zero_gradient_from_moving_x():
    ctx = _context()
    grad = torch.randn(3, 4, 8, 8)
    grad[1] = 0.0
    grad[2] = 1e-12
    step = polyak(grad, ctx, 1.0, 1e-8)
    assert torch.isfinite(step).all()
    assert float(step[1].abs().max()) == 0.0
    assert float(step[2].abs().max()) == 0.0
    assert float(step[0].abs().max()) > 0.0


def test_cap_binds_only_above_the_limit():
    disp = torch.stack([torch.full((4, 8, 8), 0.1), torch.full((4, 8, 8), 5.0)])
    capped, was_capped = cap_displacement(disp, 1.0)
    assert was_capped.tolist() == [False, True]
    assert torch.allclose(capped[0], disp[0])
    rms = capped[1].square().mean().sqrt()
    assert abs(float(rms) - 1.0) < 1e-5


def test_normalized_rule_sets_the_rms_relative_to_the_denoising_step():
    ctx = _context()
    grad = torch.randn(3, 4, 8, 8) * torch.tensor([0.01, 1.0, 100.0]).view(3, 1, 1, 1)
    step = normalized(grad, ctx, 0.5, 1e-8)
    for i in range(3):
        step_rms = step[i].square().mean().sqrt()
        ref_rms = ctx.denoise_step[i].square().mean().sqrt()
        assert abs(float(step_rms / ref_rms) - 0.5) < 1e-4
        cos = torch.nn.functional.cosine_similarity(step[i].flatten(), grad[i].flatten(), dim=0)
        assert float(cos) > 0.9999


def test_constant_rule_scales_the_gradient():
    ctx = _context()
    grad = torch.randn(3, 4, 8, 8)
    assert torch.allclose(constant(grad, ctx, 0.25, 1e-8), 0.25 * grad)


def test_per_sample_norm_shape_broadcasts():
    t = torch.randn(2, 3, 4, 5)
    assert per_sample_norm(t).shape == (2, 1, 1, 1)


def test_loss_polyak_removes_a_fraction_of_the_loss_whatever_its_units():
    from steer.guidance.step_rules import loss_polyak

    torch.manual_seed(2)
    x = torch.randn(3, 4, 8, 8)
    target = torch.randn(3, 4, 8, 8)
    for units in (1e-4, 1.0, 1e4):  # the same loss in other units must move x the same way
        values = units * (x - target).square().flatten(1).sum(1)
        grad = units * 2 * (x - target)
        ctx = StepContext(eps=torch.randn_like(x), denoise_step=torch.randn_like(x), noise_level=torch.tensor(1.0), loss=values)
        step = loss_polyak(grad, ctx, 0.1, 0.0)
        after = units * (x - step - target).square().flatten(1).sum(1)
        # first order: ℓ − η·ℓ; for this quadratic exactly ℓ·(1 − η/2)² .
        assert torch.allclose(after / values, torch.full((3,), (1 - 0.05) ** 2), rtol=1e-4), units
    ctx = StepContext(eps=x, denoise_step=x, noise_level=torch.tensor(1.0), loss=torch.ones(3))
    grad = torch.randn_like(x)
    grad[1] = 0.0
    assert float(loss_polyak(grad, ctx, 1.0, 1e-8)[1].abs().max()) == 0.0
