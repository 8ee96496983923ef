import dataclasses

import pytest
import torch
from unit.toy import CountingLoss, GaussianDenoiser, identity_decode, karras_like_sigmas

from steer.errors import SteerError
from steer.guidance.augment import AugmentConfig
from steer.guidance.config import PRESETS, GuidanceConfig, TimeTravel, preset
from steer.guidance.losses.base import Window
from steer.guidance.losses.color import TargetColorLoss
from steer.guidance.losses.combine import CombinedLoss, LossTerm
from steer.guidance.sampler import sample
from steer.guidance.trace import GuidanceTrace

RED = (1.0, 0.0, 0.0)


def _start(batch=2, seed=0, size=8):
    gen = torch.Generator().manual_seed(seed)
    sigmas = karras_like_sigmas(12)
    return torch.randn(batch, 3, size, size, generator=gen) * sigmas[0], sigmas


def _plain(**changes) -> GuidanceConfig:
    return dataclasses.replace(GuidanceConfig(step_rule="polyak", scale=0.5), **changes)


def _final_loss(config, loss=None, batch=2):
    x, sigmas = _start(batch)
    loss = loss or TargetColorLoss(RED)
    out = sample(GaussianDenoiser(), identity_decode, loss, x, sigmas, config, seed=1)
    return loss(out)


def test_scale_zero_equals_the_unguided_sampler():
    x, sigmas = _start()
    den = GaussianDenoiser()
    out = sample(den, identity_decode, TargetColorLoss(RED), x, sigmas, _plain(scale=0.0), seed=1)
    y = x.clone()
    for i in range(len(sigmas) - 1):
        x0 = den(y, sigmas[i].expand(2))
        y = x0 + sigmas[i + 1] * (y - x0) / sigmas[i]
    assert torch.allclose(out, y, atol=1e-6)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_lowers_the_loss(name):
    unguided = _final_loss(_plain(scale=0.0))
    guided = _final_loss(preset(name))
    assert (guided < unguided).all(), (name, guided, unguided)


@pytest.mark.parametrize("rule", ["polyak", "normalized", "constant"])
@pytest.mark.parametrize("path", ["through_model", "x0_shortcut"])
def test_each_rule_and_path_lowers_the_loss(rule, path):
    unguided = _final_loss(_plain(scale=0.0))
    guided = _final_loss(_plain(step_rule=rule, gradient_path=path, scale=0.5))
    assert (guided < unguided).all()


def test_x0_shortcut_never_backpropagates_through_the_denoiser():
    x, sigmas = _start()
    den = GaussianDenoiser()
    sample(den, identity_decode, TargetColorLoss(RED), x, sigmas, _plain(gradient_path="x0_shortcut"), seed=0)
    assert den.calls == 12 and den.backward_calls == 0


def test_through_model_backpropagates_through_the_denoiser_once_per_guided_call():
    x, sigmas = _start()
    den = GaussianDenoiser()
    sample(den, identity_decode, TargetColorLoss(RED), x, sigmas, _plain(gradient_path="through_model"), seed=0)
    assert den.backward_calls == 12


def test_time_travel_runs_the_configured_number_of_extra_model_calls():
    x, sigmas = _start()
    steps = len(sigmas) - 1
    window = Window(0.25, 0.75)
    in_window = sum(window.contains(i / steps) for i in range(steps))
    for repeats in (1, 2, 4):
        den = GaussianDenoiser()
        trace = GuidanceTrace()
        config = _plain(time_travel=TimeTravel(repeats=repeats, window=window))
        sample(den, identity_decode, TargetColorLoss(RED), x, sigmas, config, seed=0, trace=trace)
        assert den.calls == steps + (repeats - 1) * in_window
        assert trace.model_calls == den.calls
        assert sum(r.repeat > 0 for r in trace.records) == (repeats - 1) * in_window


def test_time_travel_changes_the_result():
    base = _final_loss(_plain())
    travelled = _final_loss(_plain(time_travel=TimeTravel(repeats=3, window=Window(0.2, 0.8))))
    assert not torch.allclose(base, travelled)


def test_guidance_window_limits_where_the_loss_runs():
    x, sigmas = _start()
    loss = CountingLoss(TargetColorLoss(RED))
    sample(GaussianDenoiser(), identity_decode, loss, x, sigmas, _plain(window=Window(0.5, 1.0)), seed=0)
    assert len(loss.batch_sizes) == 6


def test_augmentation_batches_copies_through_the_loss_each_step():
    x, sigmas = _start(batch=3)
    loss = CountingLoss(TargetColorLoss(RED))
    sample(GaussianDenoiser(), identity_decode, loss, x, sigmas, _plain(augment=AugmentConfig(copies=5)), seed=0)
    assert loss.batch_sizes == [15] * 12


def test_augmentation_changes_the_result_and_is_reproducible_with_a_seed():
    config = _plain(augment=AugmentConfig(copies=4))
    x, sigmas = _start()
    runs = [sample(GaussianDenoiser(), identity_decode, TargetColorLoss(RED), x, sigmas, config, seed=5) for _ in range(2)]
    plain = sample(GaussianDenoiser(), identity_decode, TargetColorLoss(RED), x, sigmas, _plain(), seed=5)
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], plain)


def test_sampling_leaves_the_callers_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    x, sigmas = _start()
    sample(GaussianDenoiser(), identity_decode, TargetColorLoss(RED), x, sigmas, _plain(augment=AugmentConfig(copies=3), eta=1.0), seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_samples_in_a_batch_are_guided_independently():
    x, sigmas = _start(batch=3)
    config = _plain(step_rule="polyak")
    together = sample(GaussianDenoiser(), identity_decode, TargetColorLoss(RED), x, sigmas, config, seed=0)
    for i in range(3):
        alone = sample(GaussianDenoiser(), identity_decode, TargetColorLoss(RED), x[i : i + 1], sigmas, config, seed=0)
        assert torch.allclose(alone[0], together[i], atol=1e-5), i


def test_ancestral_eta_adds_seeded_noise():
    x, sigmas = _start()
    a = sample(GaussianDenoiser(), identity_decode, TargetColorLoss(RED), x, sigmas, _plain(eta=1.0), seed=1)
    b = sample(GaussianDenoiser(), identity_decode, TargetColorLoss(RED), x, sigmas, _plain(eta=1.0), seed=1)
    c = sample(GaussianDenoiser(), identity_decode, TargetColorLoss(RED), x, sigmas, _plain(eta=1.0), seed=2)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_nan_loss_stops_with_a_clear_error():
    class NanAfterFirst:
        name = "nan-after-first"
        calls = 0

        def __call__(self, images):
            self.calls += 1
            value = images.mean(dim=(1, 2, 3))
            return value * float("nan") if self.calls > 2 else value

    x, sigmas = _start()
    with pytest.raises(SteerError, match="NaN or inf"):
        sample(GaussianDenoiser(), identity_decode, NanAfterFirst(), x, sigmas, _plain(), seed=0)


def test_a_loss_that_ignores_the_image_is_rejected():
    class Constant:
        name = "constant"

        def __call__(self, images):
            return torch.zeros(images.shape[0])

    x, sigmas = _start()
    with pytest.raises(SteerError, match="does not depend on the image"):
        sample(GaussianDenoiser(), identity_decode, Constant(), x, sigmas, _plain(), seed=0)


def test_trace_records_loss_gradient_and_step_per_guided_call():
    x, sigmas = _start()
    trace = GuidanceTrace()
    sample(GaussianDenoiser(), identity_decode, TargetColorLoss(RED), x, sigmas, _plain(), seed=0, trace=trace)
    assert trace.steps == 12 and len(trace.records) == 12
    first, last = trace.records[0], trace.records[-1]
    assert first.loss.shape == (2,) and first.grad_norm.shape == (2,) and first.displacement_rms.shape == (2,)
    assert float(last.loss.mean()) < float(first.loss.mean())
    as_dict = trace.to_dict()
    assert as_dict["records"][0]["step"] == 0 and len(as_dict["records"][0]["loss"]) == 2


def test_combined_loss_terms_act_only_in_their_windows():
    early = CountingLoss(TargetColorLoss(RED))
    late = CountingLoss(TargetColorLoss((0.0, 0.0, 1.0)))
    combined = CombinedLoss([LossTerm(early, 1.0, Window(0.0, 0.5)), LossTerm(late, 2.0, Window(0.5, 1.0))])
    x, sigmas = _start()
    sample(GaussianDenoiser(), identity_decode, combined, x, sigmas, _plain(), seed=0)
    assert len(early.batch_sizes) == 6 and len(late.batch_sizes) == 6


def test_on_step_sees_every_step_and_can_cancel():
    x, sigmas = _start()
    seen = []

    class Cancelled(Exception):
        pass

    def on_step(i, x_now, x0):
        seen.append(i)
        if i == 3:
            raise Cancelled()

    with pytest.raises(Cancelled):
        sample(GaussianDenoiser(), identity_decode, TargetColorLoss(RED), x, sigmas, _plain(), seed=0, on_step=on_step)
    assert seen == [0, 1, 2, 3]


def test_invalid_configuration_says_what_to_change():
    with pytest.raises(SteerError, match="step_rule"):
        GuidanceConfig(step_rule="adam")
    with pytest.raises(SteerError, match="swap"):
        Window(0.8, 0.2)
    with pytest.raises(SteerError, match="unknown preset"):
        preset("nope")
    with pytest.raises(SteerError, match="strength"):
        preset("paper").with_strength(float("nan"))
