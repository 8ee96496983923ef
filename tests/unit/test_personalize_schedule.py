import pytest
import torch
from diffusers import DDPMScheduler

from steer.errors import SteerError
from steer.personalize.schedule import NoiseSchedule


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_noise_and_target_match_diffusers(prediction_type):
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=prediction_type)
    schedule = NoiseSchedule(scheduler.alphas_cumprod, prediction_type)
    generator = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(3, 4, 8, 8, generator=generator), torch.randn(3, 4, 8, 8, generator=generator)
    timesteps = torch.tensor([0, 499, 999])
    assert torch.allclose(schedule.add_noise(latents, noise, timesteps), scheduler.add_noise(latents, noise, timesteps), atol=1e-6)
    expected = noise if prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, timesteps)
    assert torch.allclose(schedule.target(latents, noise, timesteps), expected, atol=1e-6)
    assert schedule.num_timesteps == 1000


def test_other_prediction_types_are_refused():
    with pytest.raises(SteerError, match="sample"):
        NoiseSchedule(torch.linspace(0.99, 0.01, 10), "sample")
