"""Crash and resume: ComfyUI is killed with SIGKILL in the middle of an AttnDreamBooth training,
started again on the same folders, and sent the same prompt. The run resumes from its last
periodic checkpoint inside stage 2 (checkpoint_minutes is a fifth of a second here; 10 minutes by
default), says how many steps it trains again, and no partial concept file exists at any point."""

import json
import re
import time

import pytest
from comfy_server import CHECKPOINT_NAME, ComfyServer, PromptBuilder

CONCEPT = "crash_dog"
TOKEN_STEPS, CROSS_ATTENTION_STEPS = 2, 60
KILL_AFTER = TOKEN_STEPS + 12  # overall steps done when the process dies: 12 steps into stage 2
CHECKPOINT_MINUTES = 1 / 300  # 0.2 s


def training_prompt() -> dict:
    b = PromptBuilder()
    ckpt = b.node("CheckpointLoaderSimple", node_id="ckpt", ckpt_name=CHECKPOINT_NAME)
    photos = b.node("EmptyImage", node_id="photos", width=64, height=64, batch_size=4, color=0x996633)
    b.node(
        "SteerAttnDreamBoothTrain",
        node_id="train",
        model=ckpt.out(0),
        clip=ckpt.out(1),
        vae=ckpt.out(2),
        images=photos.out(0),
        concept_name=CONCEPT,
        category="dog",
        preset="custom",
        unet_format="lora",
        lora_rank=4,
        overwrite=False,
        seed=0,
        token_steps=TOKEN_STEPS,
        cross_attention_steps=CROSS_ATTENTION_STEPS,
        unet_steps=0,
        resolution=64,
        token_batch_size=1,
        cross_attention_batch_size=1,
        checkpoint_minutes=CHECKPOINT_MINUTES,
    )
    b.node("PreviewImage", node_id="plot", images=["train", 3])
    return b.prompt()


def concept_files(models_dir) -> list[str]:
    return sorted(p.name for folder in ("loras", "embeddings") for p in (models_dir / folder).glob(f"{CONCEPT}*"))


def overall_progress(client, prompt_id) -> int:
    values = [e["data"]["value"] for e in client.seen_events(prompt_id) if e["type"] == "progress" and e["data"].get("node") == "train"]
    return int(max(values, default=0))


@pytest.fixture
def base_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("crash_base")


def test_sigkill_mid_training_resumes_from_the_last_checkpoint_and_says_what_was_lost(tiny_checkpoint, base_dir):
    server = ComfyServer(base_dir, tiny_checkpoint)
    client = server.start()
    try:
        prompt_id = client.queue(training_prompt())
        deadline = time.monotonic() + 600
        while overall_progress(client, prompt_id) < KILL_AFTER:
            assert time.monotonic() < deadline, f"training never reached step {KILL_AFTER}\n{client.log_tail()}"
            assert concept_files(client.models_dir) == [], "a concept file appeared before training ended"
            client.pump_events(0.2)
        server.process.kill()  # SIGKILL: no handler runs, nothing is flushed
        server.process.wait(timeout=30)
    finally:
        server.stop()
    assert concept_files(client.models_dir) == [], "a partial concept was left by the killed run"
    progress_files = list((base_dir / "user").rglob("progress.json"))
    assert len(progress_files) == 1, progress_files
    saved = json.loads(progress_files[0].read_text())
    assert saved["stage_index"] == 1 and 0 < saved["step"] <= KILL_AFTER - TOKEN_STEPS, "the last checkpoint should be inside stage 2"

    restarted = ComfyServer(base_dir, tiny_checkpoint)
    client = restarted.start()
    try:
        result = client.run(training_prompt(), timeout=900)
        log = client.log_text()
    finally:
        restarted.stop()
    assert result.status == "success"
    assert concept_files(client.models_dir) == [f"{CONCEPT}.json", f"{CONCEPT}.safetensors", f"{CONCEPT}.safetensors"]
    resumed = re.search(r"resumes at cross_attention step (\d+) from its checkpoint; (\d+) steps done after it are trained again", log)
    assert resumed, log[-3000:]
    step, lost = int(resumed.group(1)), int(resumed.group(2))
    assert step == saved["step"] and step + lost >= KILL_AFTER - TOKEN_STEPS and lost < KILL_AFTER - TOKEN_STEPS, (step, lost)
