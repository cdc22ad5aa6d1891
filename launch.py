"""effscale's command line: one config, one mode.

python launch.py --config configs/efficientnet.py:b3 --mode=info
python launch.py --config configs/compound_phi2.py --mode=info --json
python launch.py --config configs/compound_phi2.py --workdir runs/phi2
"""

from __future__ import annotations

import os
import sys

# XLA:CPU's concurrency-optimised scheduler doubled peak memory and cost 20-30% speed
# on EfficientNet train steps here (see ../shared/docs/performance.md). Must be set
# before jax is imported.
_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" {_FLAG}=false").strip()

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, optionally with an argument: file.py:arg.")
_MODE = flags.DEFINE_enum(
    "mode",
    "train",
    ["info", "train", "eval", "status", "collect", "plot"],
    "info: describe the network; train / eval: one run (or every point of a sweep config); "
    "status / collect / plot: a sweep's progress, results table and figures.",
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, result.json).")
_JSON = flags.DEFINE_bool("json", False, "--mode=info: print one JSON object instead of a table.")
_XLA = flags.DEFINE_bool("xla", True, "--mode=info: also compile the forward pass for XLA's FLOP count.")
flags.mark_flag_as_required("config")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    if _MODE.value == "info":
        import json

        from effscale import info, model, spec

        net = spec.build(config.model)
        model.check_runtime(config.model)
        desc = info.describe(net, xla=_XLA.value)
        print(json.dumps(desc, indent=2) if _JSON.value else info.format_table(desc))
        return 0
    print(f"--mode={_MODE.value} is not available yet.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    app.run(main)
