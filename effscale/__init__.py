"""effscale: model-scaling experiments on EfficientNet in JAX / Flax.

Importing effscale changes nothing in the process; `effscale.host` holds the process settings
(XLA flags, huge pages) that launch.py and the benchmark apply explicitly.
"""

__version__ = "0.1.0"
