"""Official EfficientNet presets B0-B7 with the paper's ImageNet recipe.

    python launch.py --config configs/efficientnet.py:b3 --mode=info
    python launch.py --config configs/efficientnet.py:b0 --workdir runs/b0 --config.data.manual_dir=/data/imagenet

`--mode=info` prints B3's structure (300 px, 12.23M parameters, 1.83B multiply-adds).
Training reproduces the paper's recipe (RMSProp, EMA 0.9999, 350 epochs, 0.016 per
256 images); on ImageNet the paper reports top-1 77.1 (B0) ... 84.3 (B7) with AutoAugment.
"""

from __future__ import annotations

import ml_collections

from configs import common, default
from effscale import scaling


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`arg` is the preset ('b0' ... 'b7'), optionally with ',dataset=NAME'."""
    a = common.parse_arg(arg, lone_key="preset", preset="b0", dataset="imagenet2012")
    scaling.preset(a["preset"])  # fails early on an unknown preset
    c = default.get_config()
    c.model.preset = a["preset"].lower()
    c.data.name = a["dataset"]
    return c
