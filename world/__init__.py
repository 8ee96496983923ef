"""A small text-to-image world of our own: generated shape scenes with captions, a latent
diffusion model in SD's architecture trained on them, guides to steer with and judges that
share nothing with the guides. See MODEL_CARD.md."""
