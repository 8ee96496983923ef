"""AttnDreamBooth personalization (Pang et al., NeurIPS 2024) in plain torch.

stages.py        the three stages, the presets (official, fast, custom) and build_plan
regularizer.py   the cross-attention regularizer, the attn2 capture and its explicit attention
prompt.py        the training prompt around [V], for the backbones' text side
data.py          the photos and their augmentation
latent_cache.py  the VAE posterior of each distinct view, computed once
schedule.py      noise schedule and training target (ε or v)
backbone.py      the interface a model must offer; diffusers_backbone.py implements it
training_step.py one optimizer step (the trainer runs it; the benchmarks time it)
trainer.py       runs the stages; checkpoint.py saves and resumes them
training_run.py  one run from photos to files, shared by the node and `steer train`
export.py        writes the embedding, the UNet change (full or LoRA) and the JSON
ldm_names.py     diffusers -> ComfyUI (LDM) UNet parameter names
plot.py          the loss chart

Nothing here imports ComfyUI; the ComfyUI backend lives with the nodes.
"""
