"""Validation of the augmentation fields of a config, before anything is read or compiled.

Each message names the field, the value given and what is allowed. The data fields are checked by
effscale.data (its config check calls `check_data`); the train fields by `check_train`.
"""

from __future__ import annotations

from typing import Any

AUGMENTS = ("none", "autoaugment", "randaugment")
ERASING_MODES = ("pixel", "const")
# RandAugment's magnitude is on AutoAugment's 0..10 scale; the RandAugment paper searched up to 30.
MAX_MAGNITUDE = 30.0


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _probability(field: str, value: Any) -> None:
    if not _number(value) or not 0 <= value <= 1:
        raise ValueError(f"{field}={value!r}: expected a probability in [0, 1].")


def _range(field: str, value: Any, low: float, high: float | None) -> None:
    """`value` is (lo, hi) with low < lo <= hi (<= high when given)."""
    ok = isinstance(value, tuple | list) and len(value) == 2 and all(_number(v) for v in value)
    ok = ok and low < value[0] <= value[1] and (high is None or value[1] <= high)
    if not ok:
        upper = f" <= {high:g}" if high is not None else ""
        raise ValueError(f"{field}={value!r}: expected (lo, hi) with {low:g} < lo <= hi{upper}.")


def check_data(data: Any) -> None:
    """config.data's augment, randaugment_layers / _magnitude and random_erasing fields."""
    augment = data.get("augment", "none")
    if augment not in AUGMENTS:
        raise ValueError(f"config.data.augment={augment!r}: expected one of {AUGMENTS}.")
    layers = data.get("randaugment_layers", 2)
    if not isinstance(layers, int) or isinstance(layers, bool) or layers < 1:
        raise ValueError(f"config.data.randaugment_layers={layers!r}: expected an integer >= 1.")
    magnitude = data.get("randaugment_magnitude", 10)
    if not _number(magnitude) or not 0 <= magnitude <= MAX_MAGNITUDE:
        raise ValueError(
            f"config.data.randaugment_magnitude={magnitude!r}: expected a number in [0, {MAX_MAGNITUDE:g}]."
        )
    _probability("config.data.random_erasing", data.get("random_erasing", 0.0))
    _range("config.data.random_erasing_area", data.get("random_erasing_area", (0.02, 1 / 3)), 0.0, 1.0)
    _range("config.data.random_erasing_aspect", data.get("random_erasing_aspect", (0.3, 1 / 0.3)), 0.0, None)
    mode = data.get("random_erasing_mode", "pixel")
    if mode not in ERASING_MODES:
        raise ValueError(f"config.data.random_erasing_mode={mode!r}: expected one of {ERASING_MODES}.")


def check_train(train: Any, device_count: int | None = None) -> None:
    """config.train's mixup_alpha, cutmix_alpha, mix_prob and switch_prob; with `device_count`, also that
    mixing has a partner on every device (examples are mixed with others on their own device)."""
    for field in ("mixup_alpha", "cutmix_alpha"):
        alpha = train.get(field, 0.0)
        if not _number(alpha) or alpha < 0:
            raise ValueError(f"config.train.{field}={alpha!r}: expected a number >= 0 (0 turns it off).")
    _probability("config.train.mix_prob", train.get("mix_prob", 1.0))
    _probability("config.train.switch_prob", train.get("switch_prob", 0.5))
    if not (train.get("mixup_alpha", 0.0) > 0 or train.get("cutmix_alpha", 0.0) > 0):
        return
    per_device = train.batch_size // device_count if device_count else train.batch_size
    if per_device < 2:
        where = f" over {device_count} devices" if device_count else ""
        raise ValueError(
            f"config.train.batch_size={train.batch_size}{where} leaves {per_device} example per device, and "
            "mixup / CutMix pair each example with another on its device: use a per-device batch of at "
            "least 2, or set config.train.mixup_alpha=0 and config.train.cutmix_alpha=0."
        )
