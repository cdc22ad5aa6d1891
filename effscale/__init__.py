"""effscale: model-scaling experiments on EfficientNet in JAX / Flax."""

__version__ = "0.1.0"
