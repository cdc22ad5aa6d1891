"""Input-pipeline throughput: images/s per host core for the trainer's training preprocessing.

    python benchmarks/input_pipeline.py                                      # 224 .. 600 px, none / RA / AA
    python benchmarks/input_pipeline.py --resolutions 224 --images 256 --threads 4
    python benchmarks/input_pipeline.py --augments none,autoaugment --nodeterministic --parallel_calls 8
    python benchmarks/input_pipeline.py --resolutions 64 --images 32 --warmup 8 --source_images 8   # smoke run

Each measurement runs effscale.data's own `preprocess_train` (JPEG decode, random-resized crop,
flip, the chosen policy, normalisation) in a tf.data map, batched and prefetched as the trainer
does, over synthetic JPEGs of ImageNet's typical sizes (about 400 x 350 to 500 x 375, made
in-process with tf.io.encode_jpeg). A measurement is its warm-up batches, untimed, then its timed
batches. "per core" divides by the cores tf.data may use: --threads when given, else the
process's CPUs. The ratio is a configuration's images/s over the no-augmentation baseline's at
the same resolution (below 1: the policy costs that share of throughput).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import tensorflow as tf
from absl import app, flags

from configs import default
from effscale import data

_RESOLUTIONS = flags.DEFINE_list("resolutions", ["224", "300", "380", "456", "600"], "Output resolutions (px).")
_AUGMENTS = flags.DEFINE_list("augments", ["none", "randaugment", "autoaugment"], "config.data.augment values.")
_IMAGES = flags.DEFINE_integer("images", 512, "Timed images per measurement.")
_WARMUP = flags.DEFINE_integer("warmup", 64, "Untimed images first (graph building, thread start).")
_BATCH = flags.DEFINE_integer("batch", 32, "Batch size (examples per element after .batch).")
_SOURCE = flags.DEFINE_integer("source_images", 64, "Distinct synthetic JPEGs, cycled.")
_PARALLEL = flags.DEFINE_integer("parallel_calls", -1, "map's num_parallel_calls (-1: AUTOTUNE).")
_THREADS = flags.DEFINE_integer("threads", 0, "tf.data private thread pool size (0: TF's default pool).")
_DETERMINISTIC = flags.DEFINE_bool("deterministic", True, "tf.data deterministic order (the trainer's setting).")
_PREFETCH = flags.DEFINE_integer("prefetch", 2, "Batches prefetched.")
_LAYERS = flags.DEFINE_integer("randaugment_layers", 2, "RandAugment's number of operations.")
_MAGNITUDE = flags.DEFINE_float("randaugment_magnitude", 10.0, "RandAugment's magnitude.")
_JSON = flags.DEFINE_string("json", None, "Also write every measurement to this JSON file.")


def synthetic_jpegs(count: int, seed: int = 0) -> list[bytes]:
    """JPEGs of ImageNet's typical sizes with smooth structure and some noise (a realistic decode cost)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        h, w = int(rng.integers(350, 376)), int(rng.integers(400, 501))
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi, 3)
        base = np.stack([np.sin(x / (20 + 10 * c) + y / 30 + phase[c]) for c in range(3)], -1)
        pixels = np.clip(127 + 90 * base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        out.append(tf.io.encode_jpeg(pixels, quality=90).numpy())
    return out


def _data_config(augment: str):
    c = default.get_config().data
    c.augment = augment
    c.randaugment_layers, c.randaugment_magnitude = _LAYERS.value, _MAGNITUDE.value
    return c


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = _DETERMINISTIC.value
    if _THREADS.value:
        options.threading.private_threadpool_size = _THREADS.value
        options.threading.max_intra_op_parallelism = 1
    return options


def pipeline(jpegs: list[bytes], augment: str, resolution: int) -> tf.data.Dataset:
    """Decode + the trainer's preprocess_train, keyed per example as the trainer keys them."""
    cfg = _data_config(augment)
    data._check_config(cfg)

    def view(index, encoded):
        key = tf.stack([tf.constant(0, tf.int64), index])
        image = tf.io.decode_jpeg(encoded, channels=3)
        return data.preprocess_train(image, key, cfg, resolution)

    parallel = tf.data.AUTOTUNE if _PARALLEL.value < 0 else _PARALLEL.value
    ds = tf.data.Dataset.from_tensor_slices(jpegs).repeat().enumerate()
    ds = ds.map(
        tf.autograph.experimental.do_not_convert(view), num_parallel_calls=parallel, deterministic=_DETERMINISTIC.value
    )
    ds = ds.batch(_BATCH.value, drop_remainder=True).prefetch(_PREFETCH.value)
    return ds.with_options(_options())


def measure(ds: tf.data.Dataset, warmup: int, images: int) -> float:
    """Images/s over `images` images after `warmup` untimed ones (whole batches, at least one each)."""
    batch = _BATCH.value
    it = iter(ds)
    for _ in range(max(1, -(-warmup // batch))):
        next(it)
    timed = max(1, -(-images // batch))
    start = time.perf_counter()
    for _ in range(timed):
        next(it)
    return timed * batch / (time.perf_counter() - start)


def cores() -> int:
    return _THREADS.value or len(os.sched_getaffinity(0))


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each row's images/s over the 'none' row's at its resolution (None without one)."""
    baseline = {r["resolution"]: r["images_per_s"] for r in rows if r["augment"] == "none"}
    for r in rows:
        base = baseline.get(r["resolution"])
        r["ratio"] = r["images_per_s"] / base if base and r["augment"] != "none" else None


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'res':>5} {'augment':>12} {'images/s':>10} {'img/s/core':>11} {'vs none':>8}"
    lines = [head]
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(
            f"{r['resolution']:>5} {r['augment']:>12} {r['images_per_s']:>10.1f} "
            f"{r['images_per_s_per_core']:>11.2f} {ratio:>8}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    tf.config.set_visible_devices([], "GPU")
    jpegs = synthetic_jpegs(_SOURCE.value)
    rows = []
    for resolution in (int(r) for r in _RESOLUTIONS.value):
        for augment in _AUGMENTS.value:
            rate = measure(pipeline(jpegs, augment, resolution), _WARMUP.value, _IMAGES.value)
            rows.append({"resolution": resolution, "augment": augment, "images_per_s": rate})
            rows[-1]["images_per_s_per_core"] = rate / cores()
            print(f"{resolution} px {augment}: {rate:.1f} images/s", flush=True)
    add_ratios(rows)
    settings = (
        f"{cores()} cores, parallel_calls={_PARALLEL.value}, threads={_THREADS.value or 'default'}, "
        f"deterministic={_DETERMINISTIC.value}, prefetch={_PREFETCH.value}, batch={_BATCH.value}"
    )
    print(f"\n{settings}\n{table(rows)}")
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump({"settings": settings, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
