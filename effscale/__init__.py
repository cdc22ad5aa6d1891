"""effscale: model-scaling experiments on EfficientNet in JAX / Flax."""

import os as _os

__version__ = "0.1.0"

# XLA:CPU's concurrency-optimised scheduler doubled peak memory and cost 20-30% speed on
# EfficientNet train steps here (../shared/docs/performance.md). XLA reads the flag when its
# backend starts, so setting it on import covers launch.py, tests, notebooks and the benchmark;
# a value the user already put in XLA_FLAGS wins.
_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
if _FLAG not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + f" {_FLAG}=false").strip()
