"""AttnDreamBooth personalization (Pang et al., NeurIPS 2024) in plain torch.

stages.py      the three stages and the presets (official, fast, custom)
regularizer.py the cross-attention regularizer and the attn2 capture
data.py        the photos and their augmentation
schedule.py    noise schedule and training target (ε or v)
backbone.py    the interface a model must offer; diffusers_backbone.py implements it
trainer.py     runs the stages; checkpoint.py saves and resumes them
export.py      writes the embedding, the UNet change (full or LoRA) and the JSON
ldm_names.py   diffusers -> ComfyUI (LDM) UNet parameter names

Nothing here imports ComfyUI; the ComfyUI backend lives with the nodes.
"""
