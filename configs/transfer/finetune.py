"""Fine-tune ImageNet EfficientNet weights on another dataset: the new head alone, then the top blocks too.

    python launch.py --config configs/transfer/finetune.py \
        --config.init.weights=/path/efficientnetb0_notop.h5 --config.data.name=my_tfds_dataset
    python launch.py --config configs/transfer/finetune.py:b3 --config.init.weights=tf_efficientnet_b3.safetensors \
        --config.init.timm_arch=tf_efficientnet_b3 --config.data.name=cifar10

The recipe of Keras' transfer-learning and fine-tuning guide: the pretrained base with its 1000-way top
dropped, pooling -> dropout -> a dense layer for the dataset's classes. Phase 1 trains the head
alone on the frozen base; phase 2 (a fresh optimizer, 10x lower learning rate) also trains
block6a and everything after it. BatchNorms of the base stay in inference mode throughout
(transfer.batchnorm='base'): their statistics are the imported ones. For other phases (or a
single one: ``c.transfer.phases = ()`` and ``c.transfer.freeze = 'base'``) edit a copy of this
file; ``--config.init.top=drop`` forces a new head. The input normalisation is
ImageNet's, what the Keras and timm weights expect (the trainer warns when a file says otherwise).
"""

from __future__ import annotations

import ml_collections

from configs import common, default
from effscale import scaling


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`arg`: the preset of the weights ('b0' ... 'b7', default b0), optionally with ',dataset=NAME'."""
    a = common.parse_arg(arg, lone_key="preset", preset="b0", dataset="imagenette")
    scaling.preset(a["preset"])  # fails early on an unknown preset
    c = default.get_config()
    c.model.preset = a["preset"].lower()
    c.model.pooling = "avg"  # as Keras' guide; configs/transfer/fmnist_split.py uses 'max'
    c.model.dropout = 0.2
    c.data.name = a["dataset"]
    c.init.source = "auto"
    c.init.top = "auto"  # a 1000-way top is dropped when the dataset has another class count
    c.transfer.batchnorm = "base"
    c.transfer.phases = (
        {"freeze": "base", "epochs": 5, "learning_rate": 0.004},
        {"freeze": "below:block6a", "epochs": 10, "learning_rate": 0.0004},
    )
    t = c.train
    t.batch_size, t.eval_batch_size = 64, 256
    t.optimizer = "adamw"  # learning rates are per 256 images: 0.004 is Adam's 1e-3 at batch 64
    t.lr_schedule, t.warmup_epochs = "constant", 0.0
    t.weight_decay = 1e-5
    t.epsilon = 1e-7  # Adam's (the default 1e-3 is RMSProp's)
    t.ema_decay = 0.0
    t.eval_every_epochs = 1.0
    t.checkpoint_every_steps = 500
    return c
