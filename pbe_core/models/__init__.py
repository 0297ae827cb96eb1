"""The three Paint by Example models: exemplar encoder, 9-channel UNet, VAE."""
