"""Official EfficientNet presets B0-B7 with the paper's ImageNet recipe.

    python launch.py --config configs/efficientnet.py:b3 --mode=info
    python launch.py --config configs/efficientnet.py:b0 --workdir runs/b0 --config.data.manual_dir=/data/imagenet

`--mode=info` prints B3's structure (300 px, 12.23M parameters, 1.83B multiply-adds).
Training reproduces the paper's recipe: RMSProp, 0.016 per 256 images (0.256 at the global
batch of 4096), 5 warm-up epochs then x0.97 every 2.4 epochs, 350 epochs, label smoothing 0.1,
EMA 0.9999, the preset's resolution and dropout, drop-path 0.2, bicubic eval crop with 32 px of
padding, and on imagenet2012 AutoAugment (policy v0); on ImageNet the paper reports top-1
77.1 (B0) ... 84.3 (B7) with AutoAugment. With another dataset (',dataset=NAME') the policy is
off; `--config.data.augment=...` sets it either way.
"""

from __future__ import annotations

import ml_collections

from configs import common, default
from effscale import scaling

# The dataset of the paper's numbers: its recipe adds AutoAugment to default.py's (which has the rest).
IMAGENET = "imagenet2012"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`arg` is the preset ('b0' ... 'b7'), optionally with ',dataset=NAME'."""
    a = common.parse_arg(arg, lone_key="preset", preset="b0", dataset=IMAGENET)
    scaling.preset(a["preset"])  # fails early on an unknown preset
    c = default.get_config()
    c.model.preset = a["preset"].lower()
    c.data.name = a["dataset"]
    if a["dataset"] == IMAGENET:
        c.data.augment = "autoaugment"
    return c
