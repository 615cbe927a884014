"""Downstream classifier benchmark: real / standard-aug / GAN-aug / synthetic-only x regimes x seeds."""
