import torch

from steer.guidance.noise_law import FLOW, VARIANCE_EXPLODING


def test_ddim_eta0_is_the_euler_step():
    x0, eps = torch.randn(2, 3), torch.randn(2, 3)
    sigma, sigma_next = torch.tensor(2.0), torch.tensor(1.0)
    x = x0 + sigma * eps
    d = (x - x0) / sigma
    expected = x + d * (sigma_next - sigma)
    assert torch.allclose(VARIANCE_EXPLODING.ddim_step(x0, eps, sigma, sigma_next, 0.0, None), expected)


def test_ddim_eta1_is_k_diffusion_ancestral_step():
    torch.manual_seed(0)
    x0, eps, fresh = torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 5)
    sigma, sigma_next = torch.tensor(3.0), torch.tensor(1.5)
    # k-diffusion get_ancestral_step(sigma, sigma_next, eta=1)
    sigma_up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
    sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
    expected = x0 + sigma_down * eps + sigma_up * fresh
    got = VARIANCE_EXPLODING.ddim_step(x0, eps, sigma, sigma_next, 1.0, fresh)
    assert torch.allclose(got, expected, atol=1e-6)


def test_renoise_restores_the_marginal_of_the_higher_level():
    torch.manual_seed(0)
    for law in (VARIANCE_EXPLODING, FLOW):
        x0 = torch.full((200_000,), 0.7)
        lo, hi = torch.tensor(0.2), torch.tensor(0.6)
        x_lo = law.signal(lo) * x0 + law.noise(lo) * torch.randn_like(x0)
        x_hi = law.renoise(x_lo, lo, hi, torch.randn_like(x0))
        assert abs(float(x_hi.mean()) - float(law.signal(hi) * 0.7)) < 0.01, law.name
        assert abs(float(x_hi.std()) - float(law.noise(hi))) < 0.01, law.name


def test_eps_inverts_the_law():
    x0, n = torch.randn(3), torch.randn(3)
    for law in (VARIANCE_EXPLODING, FLOW):
        sigma = torch.tensor(0.4)
        x = law.signal(sigma) * x0 + law.noise(sigma) * n
        assert torch.allclose(law.eps(x, x0, sigma), n, atol=1e-6)
