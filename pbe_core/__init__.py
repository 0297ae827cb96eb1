"""Paint by Example, host-free: models, checkpoint loading, preparation, sampling, pipeline."""

__version__ = "0.1.0"
