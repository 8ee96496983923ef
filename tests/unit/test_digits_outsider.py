"""The digits outsider judge: its own data split, rendering and family, and it reads real digits."""

import torch

from steer.digits import model as digits
from steer.digits.outsider import load_outsider


def test_outsider_reads_real_digits_it_never_stored():
    judge, facts = load_outsider()
    real, labels = digits.load_digits_images("heldout")
    assert float((judge.predict(real) == labels).float().mean()) >= 0.95
    assert facts["accuracy_on_A"] >= 0.95


def test_committed_references_are_the_judge_half_rendered_by_its_own_script():
    from steer.digits.outsider import _normalise, own_renders

    judge, _ = load_outsider()
    images, labels = own_renders()
    assert torch.equal(judge.labels, labels)
    assert torch.allclose(judge.references, _normalise(images).half().float(), atol=1e-3)
    assert not set(digits._split_indices()["judge_train"].tolist()) & set(digits._split_indices()["A"].tolist())


def test_outsider_has_no_gradient_to_follow():
    judge, _ = load_outsider()
    noise = torch.rand(50, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    predictions = judge.predict(noise)
    assert predictions.shape == (50,) and predictions.dtype == torch.long
    assert not hasattr(judge, "parameters")
