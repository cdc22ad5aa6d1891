"""TFDS input pipelines for image classification at any resolution.

The trainer calls these functions, all driven by `config.data`:

    info = dataset_info(config.data)            # classes (metadata only); split sizes counted on first use
    train = train_batches(config.data, spec.resolution, global_batch // process_count, seed,
                          start_step=step, process_index=..., process_count=...)
    for batch in validation_batches(config.data, spec.resolution, eval_batch // process_count, ...): ...
    for batch in eval_batches(config.data, spec.resolution, eval_batch // process_count, ...): ...  # test

Any TFDS image-classification dataset works by name; 'fashion_mnist' selects our offline builder
(effscale.fashion_mnist), prepared once into the TFDS data_dir on first use.

Splits (`resolve_splits`): the run trains on config.data.train_split less what `validation` holds
out, validates on the held-out part (or the dataset's own validation split) during the run, and
tests on config.data.eval_split at the end. validation='auto' carves the last examples of the
training split by index, so the carve is the same in every run and on every host.

Reproducibility: the training stream is a pure function of (config, resolution, batch size, seed,
process share). Each epoch is shuffled with a seed derived from (seed, epoch), and every random
crop and flip is a stateless op keyed by (seed, process, epoch, example index). Resuming at a step
therefore skips the examples before it without decoding them, and yields the same batches as an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import functools
import hashlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from effscale import fashion_mnist, storage
from effscale.augment import checks, erasing, policies

FASHION_MNIST = "fashion_mnist"
TRAIN_CROPS = ("inception", "center", "none")
RESIZE_METHODS = ("bilinear", "bicubic", "area", "nearest", "lanczos3", "lanczos5", "gaussian", "mitchellcubic")
ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
# The paper's eval padding is defined at this resolution; it is scaled linearly with the resolution.
PADDING_REFERENCE_RESOLUTION = 224
# Indices under which the augmentation policy's and random erasing's keys are folded from an example's key.
_AUGMENT_STREAM, _ERASING_STREAM = 1, 2

# TF must not take the accelerator (or its memory) from JAX: the pipeline runs on the CPU.
with contextlib.suppress(RuntimeError):  # raised when TF's devices are already initialised
    tf.config.set_visible_devices([], "GPU")


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetInfo:
    """What the trainer needs to know about a dataset before building the model.

    `name` and `num_classes` are TFDS metadata. The split sizes can need the data itself (TFDS learns
    them while preparing a dataset, and a class subset is counted from its labels), so `count`, when
    given, works them out on first use of `train_examples` or `eval_examples`: resolving a config
    (`--mode=info`) never prepares or reads a dataset. Known sizes are passed as plain numbers.
    """

    name: str
    num_classes: int
    _train_examples: int | None = dataclasses.field(default=None, repr=False)
    _eval_examples: int | None = dataclasses.field(default=None, repr=False)
    count: Callable[[], tuple[int, int, int | None]] | None = dataclasses.field(default=None, repr=False)
    _validation_examples: int | None = dataclasses.field(default=None, repr=False)  # None: no validation split

    @functools.cached_property
    def _sizes(self) -> tuple[int, int, int | None]:
        if self.count is not None:
            return self.count()
        if self._train_examples is None or self._eval_examples is None:
            raise ValueError(f"DatasetInfo of {self.name!r} has neither split sizes nor a way to count them.")
        return self._train_examples, self._eval_examples, self._validation_examples

    @property
    def train_examples(self) -> int:
        return self._sizes[0]

    @property
    def eval_examples(self) -> int:
        """Examples of the test split (config.data.eval_split)."""
        return self._sizes[1]

    @property
    def validation_examples(self) -> int | None:
        """Examples of the held-out validation split; None when the run has none (validation='none')."""
        return self._sizes[2]


# ---------------------------------------------------------------------------------------------
# Dataset lookup and preparation


def dataset_info(data_cfg) -> DatasetInfo:
    """Class count from the dataset's TFDS metadata, without preparing or reading the dataset.

    Validates the configuration: a ValueError says what to fix for an unknown name, missing
    Fashion-MNIST files, a dataset that is not image classification or a bad class subset. The
    split sizes are counted on first use (`DatasetInfo`), which prepares the dataset if it never
    was (Fashion-MNIST: seconds, once) and raises ValueError for an unknown split or a validation
    split that leaves nothing to train on.
    """
    data_cfg = copy.deepcopy(data_cfg)  # counted later: later edits of the caller's config must not change it
    _check_reachable(data_cfg)
    builder = _checked_builder(data_cfg)
    _, label_key = _feature_keys(builder)
    num_classes = int(builder.info.features[label_key].num_classes)
    classes = _check_classes(data_cfg, num_classes)

    def count() -> tuple[int, int, int | None]:
        prepared = _builder(data_cfg)
        splits = resolve_splits(data_cfg, prepared.info.splits)
        validation = None
        if splits.validation is not None:
            validation = _split_size(prepared, data_cfg, splits.validation, train=False)
            if validation == 0:
                raise ValueError(
                    f"config.data.validation={data_cfg.validation!r}: split {splits.validation!r} keeps no examples "
                    "of config.data.classes; give a larger split or validation='none'."
                )
        return (
            _split_size(prepared, data_cfg, splits.train, train=True),
            _split_size(prepared, data_cfg, splits.test, train=False),
            validation,
        )

    return DatasetInfo(data_cfg.name, len(classes) if classes else num_classes, count=count)


# ---------------------------------------------------------------------------------------------
# Class subsets and label budgets (config.data.classes / train_examples), e.g. for transfer learning.


def _classes(data_cfg) -> tuple[int, ...] | None:
    classes = data_cfg.get("classes")
    return tuple(int(c) for c in classes) if classes else None


def _subsetting(data_cfg) -> bool:
    return bool(_classes(data_cfg) or data_cfg.get("train_examples"))


def _check_classes(data_cfg, num_classes: int) -> tuple[int, ...] | None:
    classes = _classes(data_cfg)
    if classes and (len(set(classes)) != len(classes) or not all(0 <= c < num_classes for c in classes)):
        raise ValueError(
            f"config.data.classes={classes}: expected distinct labels in 0..{num_classes - 1} of {data_cfg.name!r}."
        )
    n = data_cfg.get("train_examples")
    if n is not None and n < 1:
        raise ValueError(f"config.data.train_examples must be >= 1 (or None for all), got {n}.")
    return classes


def _subset(ds: tf.data.Dataset, data_cfg, train: bool) -> tf.data.Dataset:
    """Keeps the examples of config.data.classes, relabelled 0..k-1 in the listed order, and for
    training only the first config.data.train_examples of them (file order: the same few labels
    in every run and arm)."""
    classes = _classes(data_cfg)
    if classes:
        listed = tf.constant(classes, tf.int32)
        ds = ds.filter(_graph(lambda image, label: tf.reduce_any(tf.equal(label, listed))))
        ds = ds.map(
            _graph(
                lambda image, label: (image, tf.cast(tf.argmax(tf.cast(tf.equal(label, listed), tf.int32)), tf.int32))
            )
        )
    if train and data_cfg.get("train_examples"):
        ds = ds.take(int(data_cfg.train_examples))
    return ds


_COUNTS: dict[tuple[Any, ...], int] = {}


def _split_size(builder: tfds.core.DatasetBuilder, data_cfg, split: Any, train: bool) -> int:
    """Examples of `split` after the class filter and label budget (counted once per process: labels only)."""
    size = _num_examples(builder, split)
    if not _subsetting(data_cfg):
        return size
    classes = _classes(data_cfg)
    if classes:
        key = (builder.name, str(builder.data_dir), str(split), classes)
        if key not in _COUNTS:
            labels = _read(builder, split).map(_graph(lambda image, label: label)).batch(8192)
            _COUNTS[key] = int(sum(np.isin(b, classes).sum() for b in labels.as_numpy_iterator()))
        size = _COUNTS[key]
    n = data_cfg.get("train_examples")
    if train and n:
        if n > size:
            raise ValueError(f"config.data.train_examples={n} but split {split!r} keeps only {size} examples.")
        size = int(n)
    return size


def _share(builder: tfds.core.DatasetBuilder, data_cfg, split: Any, train: bool, index: int, count: int):
    """This process's (encoded image, label) pairs of `split`, subset as configured, and a function giving their count.

    Without a subset, TFDS' split_for_jax_process shares (as before); with one, the kept examples
    are dealt round-robin (training: equal shares, the remainder dropped).
    """
    if not _subsetting(data_cfg):
        share = tfds.split_for_jax_process(split, process_index=index, process_count=count, drop_remainder=train)
        return _read(builder, share), lambda: _num_examples(builder, share)
    size = _split_size(builder, data_cfg, split, train)
    ds = _subset(_read(builder, split), data_cfg, train).shard(count, index)
    if train:
        return ds.take(size // count), lambda: size // count
    return ds, lambda: len(range(index, size, count))


def eval_steps(data_cfg, batch_size: int, process_count: int = 1) -> int:
    """Number of batches `eval_batches` yields on every process (the largest share, padded)."""
    return _eval_steps(dataset_info(data_cfg).eval_examples, batch_size, process_count)


def _eval_steps(num_examples: int, batch_size: int, process_count: int) -> int:
    largest_share = -(-num_examples // process_count)
    return max(1, -(-largest_share // batch_size))


def _user_dir(value: str | None, field: str) -> str | None:
    """A directory the config names (local or gs://), as TFDS takes it; ValueError naming `field` for another scheme.

    Local paths are passed on as given (TFDS expands ~ and resolves them against the current
    directory); a gs:// URL in the form effscale uses everywhere (no trailing slash).
    """
    if not value:
        return None
    checked = storage.path(value, field)
    return os.fspath(checked) if storage.is_object_store(checked) else value


def _data_dir(data_cfg) -> str | None:
    return _user_dir(data_cfg.data_dir, "config.data.data_dir")


def _manual_dir(data_cfg) -> str | None:
    manual_dir = _user_dir(data_cfg.manual_dir, "config.data.manual_dir")
    if data_cfg.name == FASHION_MNIST:
        return manual_dir or fashion_mnist.DEFAULT_MANUAL_DIR
    return manual_dir


def _check_reachable(data_cfg) -> None:
    """A gs:// data_dir / manual_dir that cannot be used (no bucket, no credentials) is one line before any read."""
    given = {"config.data.data_dir": _data_dir(data_cfg), "config.data.manual_dir": _manual_dir(data_cfg)}
    for field, value in given.items():
        if value and storage.is_object_store(value):
            storage.check_reachable(value, field)


def _checked_builder(data_cfg) -> tfds.core.DatasetBuilder:
    """The builder for `data_cfg.name` after checking the config and (Fashion-MNIST) its files; nothing prepared."""
    _check_config(data_cfg)
    if data_cfg.name == FASHION_MNIST:
        manual_dir = _manual_dir(data_cfg)
        missing = fashion_mnist.missing_files(manual_dir)
        if missing:
            raise ValueError(
                f"Fashion-MNIST: files {', '.join(missing)} not found in {manual_dir}. {fashion_mnist.INSTRUCTIONS}"
            )
    return _make_builder(data_cfg.name, _data_dir(data_cfg))


def _builder(data_cfg) -> tfds.core.DatasetBuilder:
    """A prepared builder for `data_cfg.name` (preparing it on first use)."""
    builder = _checked_builder(data_cfg)
    if not builder.is_prepared():
        _prepare(builder, _manual_dir(data_cfg))
        # Another process may have prepared it: a fresh builder reads the split sizes from disk.
        builder = _make_builder(data_cfg.name, _data_dir(data_cfg))
    return builder


def _make_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    if name == FASHION_MNIST:
        return fashion_mnist.FashionMnistIdx(data_dir=data_dir)
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(
            f"Unknown dataset {name!r} in config.data.name: not a TFDS dataset name. Use '{FASHION_MNIST}' "
            "(offline default) or a TFDS image-classification dataset such as 'cifar10', 'imagenette' or "
            "'imagenet2012'."
        ) from e


def _prepare(builder: tfds.core.DatasetBuilder, manual_dir: str | None) -> None:
    """Prepares `builder` in its data_dir once, even when several processes start together.

    TFDS writes into a temporary directory and renames it, but two racing processes would both
    generate and the second rename fails: an exclusive lock serialises them, and whoever comes
    second finds the data ready. The lock lives in the local temp dir (keyed by the data_dir)
    because data_dir may be a bucket, where file locks do not exist.
    """
    key = hashlib.sha256(f"{builder.data_dir_root}/{builder.name}".encode()).hexdigest()[:16]
    lock_path = os.path.join(tempfile.gettempdir(), f"effscale-tfds-{builder.name}-{key}.lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            if builder.is_prepared():
                return
            config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
            try:
                builder.download_and_prepare(download_config=config)
            except Exception as e:  # any failure gets the same advice, with its cause attached
                raise ValueError(
                    f"Dataset {builder.name!r} is not prepared in {builder.data_dir} and preparing it failed "
                    f"({type(e).__name__}: {e}). Prepare it once with `tfds build {builder.name} "
                    f"--data_dir={builder.data_dir_root}` (add --manual_dir=DIR for datasets that need a manual "
                    "download, e.g. imagenet2012), or set config.data.data_dir to where it is prepared "
                    "and config.data.manual_dir to the downloaded files."
                ) from e
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _check_config(data_cfg) -> None:
    if data_cfg.train_crop not in TRAIN_CROPS:
        raise ValueError(f"config.data.train_crop={data_cfg.train_crop!r}; expected one of {TRAIN_CROPS}.")
    if data_cfg.resize_method not in RESIZE_METHODS:
        raise ValueError(f"config.data.resize_method={data_cfg.resize_method!r}; expected one of {RESIZE_METHODS}.")
    if not 0 < data_cfg.min_crop_area <= 1:
        raise ValueError(f"config.data.min_crop_area={data_cfg.min_crop_area} must lie in (0, 1].")
    if len(data_cfg.mean) != 3 or len(data_cfg.std) != 3:
        raise ValueError("config.data.mean and config.data.std need one value per RGB channel.")
    _check_validation(data_cfg)
    checks.check_data(data_cfg)


def _check_validation(data_cfg) -> None:
    """config.data.validation / validation_examples, as far as they can be checked without split sizes."""
    mode, wanted = data_cfg.get("validation", "auto"), data_cfg.get("validation_examples")
    allowed = "'auto', 'none' or a TFDS split such as 'train[-5000:]'"
    if not isinstance(mode, str) or not mode:
        raise ValueError(f"config.data.validation={mode!r}; expected {allowed}.")
    if mode not in VALIDATION_MODES:
        try:
            tfds.core.ReadInstruction.from_spec(mode)
        except (ValueError, NotImplementedError) as e:
            raise ValueError(f"config.data.validation={mode!r} is not a TFDS split; expected {allowed}.") from e
    if wanted is not None and (isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1):
        raise ValueError(f"config.data.validation_examples={wanted!r}; expected an integer >= 1 or None.")
    if wanted is not None and mode != "auto":
        raise ValueError(
            f"config.data.validation_examples={wanted} applies to validation='auto' only; with validation={mode!r} "
            "give the size in the split (e.g. 'train[-5000:]') or unset validation_examples."
        )


def _feature_keys(builder: tfds.core.DatasetBuilder) -> tuple[str, str]:
    """(image key, label key) of an image-classification dataset; ValueError for anything else."""
    info = builder.info
    keys = info.supervised_keys
    features = info.features
    if (
        not isinstance(keys, tuple)
        or len(keys) != 2
        or not all(isinstance(k, str) for k in keys)
        or not isinstance(features[keys[0]], tfds.features.Image)
        or not isinstance(features[keys[1]], tfds.features.ClassLabel)
    ):
        raise ValueError(
            f"Dataset {builder.name!r} is not an image-classification dataset: its supervised keys {keys} do not "
            "name an Image feature and a ClassLabel feature."
        )
    channels = features[keys[0]].shape[-1]
    if channels not in (1, 3):
        raise ValueError(f"Dataset {builder.name!r} has {channels}-channel images; only 1 or 3 are supported.")
    return keys


def _eval_split(data_cfg, split_infos: Any) -> str:
    if data_cfg.eval_split:
        return data_cfg.eval_split
    # Many small datasets (fashion_mnist, cifar10) have no validation split: their test split is the eval set.
    return "validation" if "validation" in split_infos else "test"


def _num_examples(builder: tfds.core.DatasetBuilder, split: Any) -> int:
    try:
        return sum(end - first for _, first, end in _ranges(builder.info.splits, split))
    except (KeyError, ValueError) as e:
        raise ValueError(
            f"Split {split!r} not found in dataset {builder.name!r} (splits: {', '.join(builder.info.splits)}); "
            "set config.data.train_split / eval_split / validation."
        ) from e


# ---------------------------------------------------------------------------------------------
# Splits: train, held-out validation, test

VALIDATION_MODES = ("auto", "none")  # or a TFDS split string
VALIDATION_CAP = 5_000  # 'auto' carves 10% of the training split, at most this many, at least 1%


@dataclasses.dataclass(frozen=True)
class Splits:
    """The TFDS splits a run reads: it trains on `train`, validates on `validation` (None: it has no
    validation split) and tests on `test` (config.data.eval_split)."""

    train: str
    validation: str | None
    test: str


def carved_size(train_examples: int) -> int:
    """Examples validation='auto' holds out of a training split of `train_examples`: 10% of it, at most
    5,000, at least 1% (and one): 5,000 of Fashion-MNIST's 60,000 and CIFAR-10's 50,000, 12,812 of
    ImageNet's 1,281,167 (the minival `train[99%:]` is, as TFDS rounds percent slices to the closest
    example), 102 of a 1,024-example slice."""
    one_percent = train_examples - round(train_examples * 99 / 100)
    return max(1, one_percent, min(VALIDATION_CAP, train_examples // 10))


def _ranges(split_infos: Any, split: Any) -> list[tuple[str, int, int]]:
    """(split name, first index, end index) of each part of `split`: a TFDS split string such as
    'train[:90%]+test', or a split object; `split_infos` maps split names to their SplitInfo."""
    spec = tfds.core.ReadInstruction.from_spec(split) if isinstance(split, str) else split
    out = []
    for part in spec.to_absolute(split_infos):
        first = part.from_ or 0
        end = split_infos[part.splitname].num_examples if part.to is None else part.to
        out.append((part.splitname, first, max(first, end)))
    return out


def _field_ranges(field: str, value: str, split_infos: Any) -> list[tuple[str, int, int]]:
    """`_ranges` of config.data.<field>, a ValueError naming the field for a split the dataset lacks."""
    try:
        return _ranges(split_infos, value)
    except (KeyError, ValueError) as e:
        raise ValueError(
            f"config.data.{field}={value!r} is not a split of this dataset ({e}); its splits: {', '.join(split_infos)}."
        ) from e


def resolve_splits(data_cfg, split_infos: Any) -> Splits:
    """The splits `data_cfg` reads, given the dataset's split sizes (`builder.info.splits`).

    config.data.validation: 'none' trains on train_split, no validation. A TFDS split string is the
    validation split; it must not overlap train_split. 'auto' takes the dataset's own 'validation'
    split when it has one and eval_split does not read it; otherwise it carves the last examples of
    train_split (whatever slice that is): `validation_examples` of them, or `carved_size` (10%,
    at most 5,000, at least 1%). With the dataset's own split, `validation_examples` takes its first ones.
    Raises ValueError naming the field when the validation split would hold the whole training split.
    """
    test = _eval_split(data_cfg, split_infos)
    mode = data_cfg.get("validation", "auto")
    if mode == "none":
        return Splits(data_cfg.train_split, None, test)
    if mode != "auto":
        _check_disjoint(data_cfg, split_infos)
        return Splits(data_cfg.train_split, mode, test)
    wanted = data_cfg.get("validation_examples")
    tested = {name for name, _, _ in _field_ranges("eval_split", test, split_infos)}
    if "validation" in split_infos and "validation" not in tested:
        own = split_infos["validation"].num_examples
        if wanted is not None and wanted > own:
            raise ValueError(
                f"config.data.validation_examples={wanted} exceeds the {own} examples of the dataset's validation "
                f"split; allowed: 1..{own}."
            )
        return Splits(data_cfg.train_split, "validation" if wanted is None else f"validation[:{wanted}]", test)
    return Splits(*_carve(data_cfg, split_infos, wanted), test)


def _carve(data_cfg, split_infos: Any, wanted: int | None) -> tuple[str, str]:
    """(train, validation): train_split less its last examples, and those examples."""
    parts = _field_ranges("train_split", data_cfg.train_split, split_infos)
    if len(parts) != 1:
        raise ValueError(
            f"config.data.validation='auto' cannot carve from config.data.train_split={data_cfg.train_split!r}, "
            "a union of splits; set config.data.validation to a TFDS split (or 'none')."
        )
    name, first, end = parts[0]
    held = carved_size(end - first) if wanted is None else wanted
    if held >= end - first:
        asked = "config.data.validation='auto'" if wanted is None else f"config.data.validation_examples={held}"
        raise ValueError(
            f"{asked} leaves no training examples: config.data.train_split={data_cfg.train_split!r} holds "
            f"{end - first}; validation_examples allows 1..{end - first - 1} (or set validation='none')."
        )
    cut = end - held
    return f"{name}[{first}:{cut}]", f"{name}[{cut}:{end}]"


def _check_disjoint(data_cfg, split_infos: Any) -> None:
    """Raises ValueError when config.data.validation shares examples with train_split."""
    train = _field_ranges("train_split", data_cfg.train_split, split_infos)
    for name, first, end in _field_ranges("validation", data_cfg.validation, split_infos):
        for other, lo, hi in train:
            if other == name and max(first, lo) < min(end, hi):
                raise ValueError(
                    f"config.data.validation={data_cfg.validation!r} overlaps config.data.train_split="
                    f"{data_cfg.train_split!r} (examples {max(first, lo)}..{min(end, hi) - 1} of {name!r}); "
                    "give disjoint splits or validation='auto'."
                )


def _splits(builder: tfds.core.DatasetBuilder, data_cfg) -> Splits:
    return resolve_splits(data_cfg, builder.info.splits)


def _read(builder: tfds.core.DatasetBuilder, split: Any) -> tf.data.Dataset:
    """(encoded image, label) pairs of `split` in file order; decoding is left for later."""
    image_key, label_key = _feature_keys(builder)
    ds = builder.as_dataset(
        split=split,
        shuffle_files=False,
        decoders={image_key: tfds.decode.SkipDecoding()},
        # Caching is config.data.cache's decision, made after decoding; TFDS would cache encoded records.
        read_config=tfds.ReadConfig(try_autocache=False),
    )
    return ds.map(_graph(lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32))))


def _decoder(builder: tfds.core.DatasetBuilder):
    """Encoded image -> uint8 (H, W, 3); grayscale is repeated into three channels."""
    image_feature = builder.info.features[_feature_keys(builder)[0]]

    def decode(encoded: tf.Tensor) -> tf.Tensor:
        image = image_feature.decode_example(encoded)
        if image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        return image

    return decode


def _graph(fn):
    """`fn` for tf.data as it is written: in TensorFlow ops with static Python branching, which AutoGraph
    need not rewrite (and with gast 0.7 fails to, printing a warning for every function)."""
    return tf.autograph.experimental.do_not_convert(fn)


def _options(data_cfg) -> tf.data.Options:
    options = tf.data.Options()
    # Deterministic order is what makes a resumed run see exactly the batches of an uninterrupted one;
    # `data.deterministic=False` lets a slow example not hold up the batch, at the cost of that exactness.
    options.deterministic = bool(data_cfg.get("deterministic", True))
    if data_cfg.get("threads"):
        # A private pool bounds how many cores tf.data takes from the XLA computation it feeds.
        options.threading.private_threadpool_size = data_cfg.threads
        options.threading.max_intra_op_parallelism = 1
    return options


# ---------------------------------------------------------------------------------------------
# Preprocessing


def center_crop_window(height, width, resolution: int, padding: float = 32) -> tuple[Any, Any, Any]:
    """(top, left, size) of the evaluation center crop of a `height` x `width` image.

    The paper crops resolution / (resolution + 32) of the shorter side at 224 px; the 32 pixels
    are scaled with the resolution so that the crop fraction, 224 / (224 + padding), does not
    depend on it (a fixed 32 would crop a 28-px image to less than half). Works on Python ints
    and on scalar tensors.
    """
    scaled_padding = padding * resolution / PADDING_REFERENCE_RESOLUTION
    fraction = resolution / (resolution + scaled_padding)
    if isinstance(height, int) and isinstance(width, int):
        size = int(fraction * min(height, width))
        return (height - size + 1) // 2, (width - size + 1) // 2, size
    size = tf.cast(fraction * tf.cast(tf.minimum(height, width), tf.float64), tf.int32)
    return (height - size + 1) // 2, (width - size + 1) // 2, size


def _center_crop(image: tf.Tensor, resolution: int, padding: float) -> tf.Tensor:
    shape = tf.shape(image)
    top, left, size = center_crop_window(shape[0], shape[1], resolution, padding)
    return image[top : top + size, left : left + size]


def _random_resized_crop(image: tf.Tensor, key: tf.Tensor, data_cfg, resolution: int) -> tf.Tensor:
    """Inception crop: area in [min_crop_area, 1] of the image, aspect 3/4..4/3; center crop if none fits."""
    shape = tf.shape(image)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=key,
        min_object_covered=data_cfg.min_crop_area,
        aspect_ratio_range=ASPECT_RATIO_RANGE,
        area_range=(data_cfg.min_crop_area, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    # The sampler returns the whole image when no candidate fits after max_attempts.
    failed = tf.reduce_all(tf.equal(size[:2], shape[:2]))
    return tf.cond(
        failed,
        lambda: _center_crop(image, resolution, data_cfg.eval_crop_padding),
        lambda: tf.slice(image, begin, size),
    )


def _resize(image: tf.Tensor, data_cfg, resolution: int) -> tf.Tensor:
    """uint8 crop -> float32 (R, R, 3) in [0, 1]."""
    image = tf.image.convert_image_dtype(image, tf.float32)
    image = tf.image.resize(image, (resolution, resolution), method=data_cfg.resize_method)
    return tf.clip_by_value(image, 0.0, 1.0)  # bicubic overshoots


def _normalise(image: tf.Tensor, data_cfg) -> tf.Tensor:
    mean = tf.constant(data_cfg.mean, tf.float32)
    std = tf.constant(data_cfg.std, tf.float32)
    return (image - mean) / std


def _finish(image: tf.Tensor, data_cfg, resolution: int) -> tf.Tensor:
    """uint8 crop -> float32 (R, R, 3): values to [0, 1], resize, normalise."""
    return _normalise(_resize(image, data_cfg, resolution), data_cfg)


def _finish_augmented(image: tf.Tensor, key: tf.Tensor, data_cfg, resolution: int) -> tf.Tensor:
    """`_finish` with config.data.augment's policy applied to the resized crop, quantised to uint8.

    The policies' pixel magnitudes (translate, cutout) are defined on the image the network sees,
    so the policy runs after the resize, on uint8 values as the operations are defined.
    """
    resized = tf.cast(tf.round(_resize(image, data_cfg, resolution) * 255.0), tf.uint8)
    augmented = policies.augment(resized, key, data_cfg)
    return _normalise(tf.cast(augmented, tf.float32) / 255.0, data_cfg)


def _erase(image: tf.Tensor, key: tf.Tensor, data_cfg) -> tf.Tensor:
    return erasing.random_erasing(
        image,
        key,
        float(data_cfg.random_erasing),
        area_range=tuple(data_cfg.get("random_erasing_area", (0.02, 1 / 3))),
        aspect_range=tuple(data_cfg.get("random_erasing_aspect", (0.3, 1 / 0.3))),
        mode=data_cfg.get("random_erasing_mode", "pixel"),
    )


def preprocess_train(image: tf.Tensor, key: tf.Tensor, data_cfg, resolution: int) -> tf.Tensor:
    """Training view of a uint8 (H, W, 3) image, keyed by `key` ([2] int): crop per `train_crop`, the
    `augment` policy, flip per `flip`, then (normalised) random erasing with probability `random_erasing`.

    The crop and flip keys are those of a run without augmentation; the policy's and erasing's keys
    are folded from `key` apart from them, so turning augmentation on leaves crops and flips as they were.
    """
    crop_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    if data_cfg.train_crop == "inception":
        image = _random_resized_crop(image, crop_key, data_cfg, resolution)
    elif data_cfg.train_crop == "center":
        image = _center_crop(image, resolution, data_cfg.eval_crop_padding)
    if data_cfg.get("augment", "none") != "none":
        augment_key = tf.random.experimental.stateless_fold_in(key, _AUGMENT_STREAM)
        image = _finish_augmented(image, augment_key, data_cfg, resolution)
    else:
        image = _finish(image, data_cfg, resolution)
    if data_cfg.flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_key)
    if data_cfg.get("random_erasing", 0.0) > 0:
        image = _erase(image, tf.random.experimental.stateless_fold_in(key, _ERASING_STREAM), data_cfg)
    return image


def preprocess_eval(image: tf.Tensor, data_cfg, resolution: int) -> tf.Tensor:
    """Evaluation view of a uint8 (H, W, 3) image: padded center crop, resize, normalise."""
    return _finish(_center_crop(image, resolution, data_cfg.eval_crop_padding), data_cfg, resolution)


# ---------------------------------------------------------------------------------------------
# Streams


def train_batches(
    data_cfg,
    resolution: int,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite training batches of this process's share: {'image': float32 (B, R, R, 3), 'label': int32 (B,)}.

    They come from the training split less the validation split carved from it (`resolve_splits`).

    `batch_size` is per process. An epoch is train_examples // (batch_size * process_count) steps;
    the remainder is dropped. Starting at `start_step` yields what an uninterrupted stream yields
    from that step on: whole epochs before it are never read, and the examples of the partial epoch
    are skipped before decoding.
    """
    builder = _builder(data_cfg)
    split = _splits(builder, data_cfg).train
    steps_per_epoch = _split_size(builder, data_cfg, split, train=True) // (batch_size * process_count)
    if steps_per_epoch < 1:
        raise ValueError(
            f"Split {split!r} of {data_cfg.name!r} is smaller than one global batch of "
            f"{batch_size} x {process_count} processes."
        )
    # Equal shares, so that every process has the examples for steps_per_epoch batches.
    share, share_size = _share(builder, data_cfg, split, True, process_index, process_count)
    decode = _decoder(builder)
    examples = share.enumerate()  # (index in share, (image, label)): the example's identity
    if data_cfg.cache:
        examples = examples.map(_graph(lambda i, ex: (i, (decode(ex[0]), ex[1]))), num_parallel_calls=tf.data.AUTOTUNE)
        examples = examples.cache()
        # The decoded share is in memory anyway: shuffle all of it, a true permutation per epoch.
        buffer = share_size()
    else:
        buffer = data_cfg.shuffle_buffer
    examples_per_epoch = steps_per_epoch * batch_size

    def epoch_examples(epoch: tf.Tensor) -> tf.data.Dataset:
        epoch_seed = tf.random.stateless_uniform(
            [], seed=tf.stack([tf.constant(seed, tf.int64), epoch]), minval=None, maxval=None, dtype=tf.int64
        )
        ds = examples.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False).take(examples_per_epoch)
        return ds.map(_graph(lambda i, ex: (epoch, i, ex)))

    first_epoch, step_in_epoch = divmod(start_step, steps_per_epoch)
    stream = tf.data.Dataset.range(first_epoch, sys.maxsize).flat_map(_graph(epoch_examples))
    stream = stream.skip(step_in_epoch * batch_size)
    base_key = tf.constant([seed, process_index], tf.int64)

    def preprocess(epoch, index, ex):
        image, label = ex
        if not data_cfg.cache:
            image = decode(image)
        key = tf.random.experimental.stateless_fold_in(tf.random.experimental.stateless_fold_in(base_key, epoch), index)
        return {"image": preprocess_train(image, key, data_cfg, resolution), "label": label}

    stream = stream.map(_graph(preprocess), num_parallel_calls=tf.data.AUTOTUNE)
    stream = stream.batch(batch_size, drop_remainder=True).prefetch(data_cfg.prefetch)
    return stream.with_options(_options(data_cfg)).as_numpy_iterator()


def eval_batches(
    data_cfg, resolution: int, batch_size: int, process_index: int = 0, process_count: int = 1
) -> Iterator[dict[str, np.ndarray]]:
    """Evaluation batches of the test split (config.data.eval_split), each example exactly once over all processes.

    {'image': float32 (B, R, R, 3), 'label': int32 (B,), 'mask': bool (B,)}. Shares differ by at
    most one example; each is padded with masked (all-zero) examples to `eval_steps` batches, so
    every process yields the same number of batches, as collective evaluation steps require.
    """
    builder = _builder(data_cfg)
    split = _splits(builder, data_cfg).test
    return _eval_stream(builder, data_cfg, split, resolution, batch_size, process_index, process_count)


def validation_batches(
    data_cfg, resolution: int, batch_size: int, process_index: int = 0, process_count: int = 1
) -> Iterator[dict[str, np.ndarray]]:
    """`eval_batches` of the held-out validation split (`resolve_splits`); ValueError when there is none."""
    builder = _builder(data_cfg)
    split = _splits(builder, data_cfg).validation
    if split is None:
        raise ValueError("config.data.validation='none': this run has no validation split.")
    return _eval_stream(builder, data_cfg, split, resolution, batch_size, process_index, process_count)


def _eval_stream(
    builder: tfds.core.DatasetBuilder,
    data_cfg,
    split: str,
    resolution: int,
    batch_size: int,
    process_index: int,
    process_count: int,
) -> Iterator[dict[str, np.ndarray]]:
    """This process's padded evaluation batches of `split` (see `eval_batches`)."""
    steps = _eval_steps(_split_size(builder, data_cfg, split, train=False), batch_size, process_count)
    share, _ = _share(builder, data_cfg, split, False, process_index, process_count)
    decode = _decoder(builder)

    def preprocess(encoded, label):
        image = preprocess_eval(decode(encoded), data_cfg, resolution)
        return {"image": image, "label": label, "mask": tf.constant(True)}

    ds = share.map(_graph(preprocess), num_parallel_calls=tf.data.AUTOTUNE)
    padding = tf.data.Dataset.from_tensors(
        {
            "image": tf.zeros((resolution, resolution, 3), tf.float32),
            "label": tf.constant(0, tf.int32),
            "mask": tf.constant(False),
        }
    ).repeat()
    ds = ds.concatenate(padding).take(steps * batch_size)
    ds = ds.batch(batch_size).prefetch(data_cfg.prefetch)
    return ds.with_options(_options(data_cfg)).as_numpy_iterator()
