"""The base config every other config starts from: EfficientNet-B0, official ImageNet recipe.

Not meant to be run directly; see configs/efficientnet.py, configs/compound.py and
configs/compound_phi2.py. Printing it:

    python launch.py --config configs/default.py --mode=info
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from effscale import scaling, spec


def get_config() -> ml_collections.ConfigDict:
    """Returns the B0 / ImageNet base config; the fields are documented inline."""
    c = ml_collections.ConfigDict()

    c.model = m = ml_collections.ConfigDict()
    # Scale. `preset` supplies width/depth/resolution/dropout; explicit values override it;
    # `phi` then applies pure compound scaling (depth alpha^phi, width beta^phi, resolution gamma^phi).
    m.preset = "b0"
    m.width = config_dict.placeholder(float)
    m.depth = config_dict.placeholder(float)
    m.resolution = config_dict.placeholder(int)
    m.dropout = config_dict.placeholder(float)
    m.phi = config_dict.placeholder(float)
    m.alpha = scaling.ALPHA
    m.beta = scaling.BETA
    m.gamma = scaling.GAMMA
    m.resolution_multiple = scaling.RESOLUTION_MULTIPLE
    # Base architecture (B0 unless changed): block strings r<repeats>_k<kernel>_s<stride>_e<expand>_c<out>_se<ratio>.
    m.blocks = spec.B0_BLOCKS
    m.stem_channels = spec.B0_STEM
    m.head_channels = spec.B0_HEAD
    m.divisor = 8
    m.in_channels = 3
    m.drop_path = 0.2  # stochastic depth at the last block; linear in the block index
    m.num_classes = config_dict.placeholder(int)  # None: taken from the dataset
    m.include_top = True
    m.pooling = "avg"  # 'avg' | 'max' | None (unpooled features, include_top=False only)
    m.head_hidden = ()  # widths of dense + swish layers before the classifier (a new head for transfer), e.g. (256,)
    m.bn_momentum = 0.99
    m.bn_epsilon = 1e-3
    # Initialisation: the official one by default. For short from-scratch runs, a zero classifier ('zeros':
    # the loss starts at log(classes), not ~5 with 10 classes) and zero-gamma residual BNs ('zeros': every
    # residual block starts as the identity, as in Goyal et al. 2017) train far faster.
    m.head_init = "uniform"  # 'uniform' (+-1/sqrt(classes)) | 'zeros'
    m.residual_bn_init = "ones"  # 'ones' | 'zeros': gamma of each residual block's project_bn
    # Runtime choices (same mathematics, different speed / memory).
    m.dtype = "float32"  # 'float32' | 'bfloat16' (compute; parameters stay float32)
    m.depthwise = "auto"  # 'auto' | 'native' | 'shift_vjp' | 'shift' | 'xla' (auto: model.default_depthwise(platform))
    m.pointwise = "auto"  # 'auto' | 'dot' | 'conv': 1x1 convolutions (auto: model.default_pointwise(platform))
    m.norm = "auto"  # 'auto' | 'fused' | 'flax': BatchNorm + swish (auto: model.default_norm(platform))
    m.remat = "none"  # 'none' | 'block' | 'dots_saveable' | 'nothing_saveable'

    c.data = d = ml_collections.ConfigDict()
    d.name = "imagenet2012"  # any TFDS image-classification dataset, or 'fashion_mnist' (offline default)
    d.data_dir = config_dict.placeholder(str)  # TFDS data_dir (None: TFDS' default)
    d.manual_dir = config_dict.placeholder(str)  # for datasets that need manual download (imagenet2012)
    d.train_split = "train"
    d.eval_split = config_dict.placeholder(str)  # test split. None: 'validation' if the dataset has one, else 'test'
    # Held-out validation for in-run evaluations and the choice of the best weights (effscale.data.resolve_splits):
    # 'auto': the dataset's own 'validation' split unless eval_split reads it, else the last examples of
    # train_split (10% of it, at most 5,000, at least 1%: Fashion-MNIST / CIFAR-10 5,000, ImageNet 12,812),
    # which training then leaves out; 'none': no validation (in-run evaluations on eval_split); or a TFDS split.
    d.validation = "auto"
    d.validation_examples = config_dict.placeholder(int)  # 'auto' only: hold out this many instead
    d.train_crop = "inception"  # 'inception' (random-resized crop) | 'center' | 'none'
    d.min_crop_area = 0.08
    d.flip = True
    d.eval_crop_padding = 32  # the paper's center-crop padding at 224 px; scaled with resolution
    d.resize_method = "bicubic"
    d.mean = (0.485, 0.456, 0.406)
    d.std = (0.229, 0.224, 0.225)
    d.cache = False  # cache decoded examples in memory (for small datasets)
    d.shuffle_buffer = 16_384
    d.prefetch = 2  # batches prepared ahead
    d.threads = config_dict.placeholder(int)  # tf.data thread pool size (None: TF's default, one per core)
    d.deterministic = True  # False: faster input on many cores, but a resumed run no longer repeats its batches exactly
    # Augmentation (effscale.augment), all off by default. The policy runs on the resized uint8 crop:
    # 'autoaugment' is the ImageNet policy v0 EfficientNet was trained with; 'randaugment' applies
    # randaugment_layers operations at randaugment_magnitude (0..30 on AutoAugment's 0..10 level scale).
    d.augment = "none"  # 'none' | 'autoaugment' | 'randaugment'
    d.randaugment_layers = 2
    d.randaugment_magnitude = 10.0
    # Random erasing after normalisation: probability, area fraction and aspect (h / w) ranges, fill.
    d.random_erasing = 0.0
    d.random_erasing_area = (0.02, 1 / 3)
    d.random_erasing_aspect = (0.3, 1 / 0.3)
    d.random_erasing_mode = "pixel"  # 'pixel' (per-pixel standard-normal noise) | 'const' (zeros)
    # Subsets (transfer learning): keep only these labels, relabelled 0..k-1 in this order (None: all), and
    # train on the first `train_examples` of what is kept (None: all; eval always uses the whole kept split).
    d.classes = config_dict.placeholder(tuple)
    d.train_examples = config_dict.placeholder(int)

    c.train = t = ml_collections.ConfigDict()
    t.batch_size = 4096  # global, over all devices and hosts
    t.eval_batch_size = 1024
    t.num_epochs = 350.0
    t.num_steps = config_dict.placeholder(int)  # overrides num_epochs when set
    t.optimizer = "rmsprop"  # 'rmsprop' | 'sgd' | 'adamw'
    t.learning_rate = 0.016  # per 256 images (scaled linearly with batch_size)
    t.lr_schedule = "exponential"  # 'exponential' (staircase) | 'cosine' | 'constant'
    t.warmup_epochs = 5.0
    t.decay_epochs = 2.4
    t.decay_rate = 0.97
    t.rmsprop_decay = 0.9
    t.momentum = 0.9
    t.epsilon = 1e-3
    t.weight_decay = 1e-5  # L2 on non-BatchNorm weights
    t.label_smoothing = 0.1
    # mixup / CutMix in the train step (effscale.augment.mix): lam ~ Beta(alpha, alpha); 0 turns each off.
    t.mixup_alpha = 0.0
    t.cutmix_alpha = 0.0
    t.mix_prob = 1.0  # probability that a step mixes at all
    t.switch_prob = 0.5  # with both on: probability of CutMix rather than mixup
    t.ema_decay = 0.9999  # 0 disables the moving average
    t.seed = 0
    t.log_every_steps = 100
    t.eval_every_epochs = 1.0
    t.checkpoint_every_steps = 1000
    t.keep_checkpoints = 3
    t.async_checkpoints = True  # write checkpoints in the background while training goes on
    t.xla_flops = True  # record XLA's FLOP count of the forward pass (one extra small compile)

    # Initial weights (transfer learning; see effscale.convert). None: train from scratch.
    c.init = i = ml_collections.ConfigDict()
    i.weights = config_dict.placeholder(str)  # Keras .h5 / .weights.h5 / .keras, timm file, or an effscale workdir
    i.source = "auto"  # 'auto' (by extension; a directory is an effscale workdir) | 'keras' | 'timm' | 'effscale'
    i.timm_arch = config_dict.placeholder(str)  # source 'timm' needs it: 'tf_efficientnet_b0', ...
    i.top = "auto"  # 'auto' (load the classifier only when the class count matches) | 'load' | 'drop'

    # Freezing (effscale.transfer): 'none' | 'base' | 'below:<block6a|stage6|top|se16|block7a/project_conv>'.
    c.transfer = tr = ml_collections.ConfigDict()
    tr.freeze = "none"
    tr.batchnorm = "frozen"  # 'frozen': frozen layers' BatchNorms keep their statistics | 'base': all base BNs
    # Phases, run one after another, each with its own optimizer (fresh state) and freeze: a tuple of dicts
    # {'freeze': ..., 'epochs' or 'steps': ..., optional train overrides such as 'learning_rate'}. Empty: one
    # phase of train.num_epochs / num_steps with transfer.freeze.
    tr.phases = ()
    return c
