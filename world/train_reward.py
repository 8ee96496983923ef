"""A toy reward head, "prefers striped shapes": logistic regression on the guide CLIP's normalised image embedding.

    python -m steer.world.train_reward --out world/weights/guides/reward

The head is a guide: it sees only the guide split (its renders, each also once degraded as the
other guides are trained, world/training_loop.degrade), embedded by the guide CLIP, label =
the main shape is striped. It is one `torch.nn.Linear(dim, 1)`, saved as `weight` and `bias`,
the layout guidance.losses.reward.RewardHead reads. Its accuracy is measured on the held-out
split's renders. The stripe judge (world/edit_judges.py, pixels only) judges what it steers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..guidance.hf_models import load_guidance_model
from ..guidance.losses.clip import HFCLIPEncoder
from ..safe_files import write_json, write_safetensors
from . import model as wm
from .data import COUNTS, load_split
from .training_loop import degrade

HEAD_FILE = "prefers_striped.safetensors"
FACTS_FILE = "facts.json"
DEFAULT_OUT = wm.MODEL_DIR / "guides" / "reward"
SEED = 8
STEPS = 1000
GUIDE_COUNT = 6000  # of the 12,000 guide renders: embedding them is most of the time
LEARNING_RATE = 0.05
WEIGHT_DECAY = 1e-4


@torch.no_grad()
def normalised_embeddings(encoder: HFCLIPEncoder, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return torch.cat([F.normalize(encoder.embed(images[k : k + batch]), dim=-1) for k in range(0, len(images), batch)])


def accuracy(head: torch.nn.Linear, embeddings: torch.Tensor, striped: torch.Tensor) -> dict:
    with torch.no_grad():
        said = head(embeddings)[:, 0] > 0
    return {
        "accuracy": float((said == striped).float().mean()),
        "balanced_accuracy": 0.5 * (float(said[striped].float().mean()) + float((~said[~striped]).float().mean())),
    }


def train_reward_head(out: Path = DEFAULT_OUT, guide_count: int = GUIDE_COUNT, log=print) -> dict:
    start = time.perf_counter()
    torch.manual_seed(SEED)
    encoder = HFCLIPEncoder(load_guidance_model(wm.MODEL_DIR / "guides" / "clip"))
    data = load_split("guide", guide_count)
    degraded = degrade(data.images, data.images.mean(0, keepdim=True), torch.Generator().manual_seed(SEED), clean=0.0)
    embeddings = normalised_embeddings(encoder, torch.cat([data.images, degraded]))
    striped = torch.tensor([s.main.striped for s in data.scenes]).repeat(2)
    head = torch.nn.Linear(embeddings.shape[1], 1)
    optimizer = torch.optim.Adam(head.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    for _ in range(STEPS):  # full batch: the data are a few thousand 64-d vectors
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(head(embeddings)[:, 0], striped.float())
        loss.backward()
        optimizer.step()
    heldout = load_split("heldout", COUNTS["heldout"])
    heldout_striped = torch.tensor([s.main.striped for s in heldout.scenes])
    facts = {
        "task": "prefers striped shapes: logit of 'the main shape is striped' on the normalised guide-CLIP image embedding",
        "layout": "torch.nn.Linear(dim, 1): weight (1, dim), bias (1,)",
        "embedding": "guides/clip, HFCLIPEncoder.embed, L2-normalised",
        "trained_on": f"guide split, {guide_count} renders, each clean and once degraded",
        "steps": STEPS,
        "learning_rate": LEARNING_RATE,
        "weight_decay": WEIGHT_DECAY,
        "seed": SEED,
        "final_bce": float(loss.detach()),
        "train": accuracy(head, embeddings, striped),
        "heldout": accuracy(head, normalised_embeddings(encoder, heldout.images), heldout_striped),
        "heldout_count": len(heldout.scenes),
        "seconds": time.perf_counter() - start,
    }
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in head.state_dict().items()}
    timeless = {k: v for k, v in facts.items() if k != "seconds"}  # so a rerun writes the same bytes
    write_safetensors(out / HEAD_FILE, tensors, metadata={"steer_reward_head": json.dumps(timeless, sort_keys=True)})
    write_json(out / FACTS_FILE, facts)
    log(
        f"reward head: held-out accuracy {facts['heldout']['accuracy']:.1%} (balanced {facts['heldout']['balanced_accuracy']:.1%}), "
        f"{facts['seconds']:.0f} s -> {out / HEAD_FILE}"
    )
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--count", type=int, default=GUIDE_COUNT, help=f"guide-split renders to train on (default {GUIDE_COUNT})")
    args = parser.parse_args(argv)
    train_reward_head(args.out, args.count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
