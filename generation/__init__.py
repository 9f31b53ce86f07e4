"""Latent diffusion: autoencoder, conditioned UNet, training, samplers (uses `conditioning`)."""
