"""The world model's plumbing: the CFG denoiser's two gradient modes, loading errors, the
benchmark's tasks and verdicts. The trained weights are exercised by test_world_weights.py."""

import pytest
import torch

from steer.benchmarks import world as bench
from steer.errors import SteerError
from steer.world import model as wm
from steer.world.experiment import make_tasks


class LinearEps(torch.nn.Module):
    """eps = A·x + B·text: stands in for the UNet, so gradients are known exactly."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.3))
        self.b = torch.nn.Parameter(torch.tensor(0.7))

    def forward(self, x, t, encoder_hidden_states):
        class Out:
            pass

        out = Out()
        out.sample = self.a * x + self.b * encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return out


def _denoiser(mode):
    cond, uncond = torch.ones(2, 3, 4), torch.zeros(2, 3, 4)
    return wm.WorldDenoiser(LinearEps(), wm.alphas_cumprod(), cond, uncond, cfg=3.0, cfg_gradient=mode)


def test_positive_and_combined_cfg_agree_in_value_and_differ_in_gradient():
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    sigma = torch.tensor(2.0)
    values, grads = {}, {}
    for mode in ("positive", "combined"):
        out = _denoiser(mode)(x, sigma)
        (grad,) = torch.autograd.grad(out.sum(), x)
        values[mode], grads[mode] = out.detach(), grad
    assert torch.allclose(values["positive"], values["combined"], atol=1e-6)
    # x0 = x − σ·eps with eps = a·x_vp + …; combined: ∂x0/∂x = 1 − σ·a/√(σ²+1). Positive branch, as ComfyUI
    # combines it: cfg × the prompt branch's ∂x0/∂x, the same sign (never 1 − cfg·σ·a/√(σ²+1), which flips).
    scale = 1.0 / (sigma**2 + 1).sqrt()
    assert torch.allclose(grads["combined"], torch.full_like(x, float(1 - sigma * 0.3 * scale)), atol=1e-5)
    assert torch.allclose(grads["positive"], torch.full_like(x, float(3.0 * (1 - sigma * 0.3 * scale))), atol=1e-5)


def test_timestep_interpolates_in_log_sigma_and_clamps():
    d = _denoiser("combined")
    sigmas = ((1 - wm.alphas_cumprod()) / wm.alphas_cumprod()).sqrt()
    t = d.timestep(torch.stack([sigmas[10], sigmas[500], (sigmas[500] * sigmas[501]).sqrt(), sigmas[-1] * 10, sigmas[0] / 10]))
    assert torch.allclose(t, torch.tensor([10.0, 500.0, 500.5, 999.0, 0.0]), atol=0.02)


def test_sigmas_for_steps_start_at_sigma_max_and_end_at_zero():
    s = wm.sigmas_for_steps(20)
    assert len(s) == 21 and s[-1] == 0 and torch.all(s[:-1][1:] < s[:-1][:-1])
    with pytest.raises(SteerError, match="between 1 and 1000"):
        wm.sigmas_for_steps(0)


def test_loading_a_folder_without_weights_names_what_is_missing(tmp_path):
    with pytest.raises(SteerError, match="lacks model_index.json.*steer.world.train"):
        wm.load_world(tmp_path)


def test_task_prompts_never_say_the_target():
    for task in make_tasks(40):
        for scene in task.scenes:
            said = {"shape": scene.main.shape, "color": scene.main.color, "background": scene.background}
            assert not all(said.get(k) == v for k, v in task.target.items()), (task.name, scene)
            if task.name == "text":
                assert "yellow" not in task.prompts[0] and "star" not in " ".join(task.prompts)
    assert len({p for t in make_tasks(40) for p in t.prompts}) > 100  # four tasks, distinct prompts


def _row(method, steps, hits, gap, keeping=0.9, frechet=1.0, seconds=1.0):
    return {
        "method": method,
        "steps": steps,
        "hit_rate": hits,
        "mean_hit_rate": sum(hits.values()) / len(hits),
        "keeping": keeping,
        "guide_judge_gap": gap,
        "frechet": frechet,
        "seconds_per_sample": seconds,
    }


def test_claims_follow_the_numbers_both_ways():
    rows = []
    for steps in (20, 50):
        rows += [
            _row("unguided", steps, dict(color=0, shape=0, text=0, reference=0), 0.0),
            _row("paper", steps, dict(color=1, shape=0.8, text=0.8, reference=0.8), 0.1),
            _row(bench.PAPER_SCALED_AUGMENTATION, steps, dict(color=1, shape=0.5, text=0.5, reference=0.5), 0.4),
            _row(bench.PAPER_MINUS_AUGMENTATION, steps, dict(color=1, shape=0.6, text=0.6, reference=0.6), 0.3),
            _row(bench.PAPER_MINUS_POLYAK, steps, dict(color=1, shape=0.9, text=0.9, reference=0.9), 0.1),
            _row(bench.PAPER_MINUS_TIME_TRAVEL, steps, dict(color=0.5, shape=0.5, text=0.5, reference=0.5), 0.1),
            _row("mpgd", steps, dict(color=1, shape=0.9, text=0.9, reference=0.9), 0.0, keeping=0.87, frechet=1.4),
        ]
    bench._add_ratios(rows)
    verdicts = {(c["claim"], c["steps"]): c["reproduced"] for c in bench.claims(rows)}
    assert verdicts[("random augmentation fights adversarial gradients (the paper's policy)", 20)] is True
    assert verdicts[("random augmentation fights adversarial gradients (a policy scaled to 32 px)", 50)] is False
    assert verdicts[("the Polyak step converges in fewer steps", 20)] is False
    assert verdicts[("time travel helps", 50)] is True
    goal = bench.goal(rows)
    assert goal["met"] is True and goal["keeping_change"] == pytest.approx(-0.03)
    rows[-1]["frechet"] = 1.6
    bench._add_ratios(rows)
    assert bench.goal(rows)["met"] is False
