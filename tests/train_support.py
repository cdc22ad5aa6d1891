"""Shared by the trainer tests (and their subprocesses): a tiny config and a runner.

Its tiny network (two short stages, 16 px) compiles in seconds, so the end-to-end
tests stay cheap on a 2-core machine. Subprocesses import it through PYTHONPATH.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import ml_collections
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# The tests compile the same tiny programs again and again, in-process and in subprocesses:
# jax's persistent cache turns the repeats into loads.
COMPILATION_CACHE = os.path.join(tempfile.gettempdir(), "effscale-tests-jax-cache")
CACHE_ENV = {
    "JAX_COMPILATION_CACHE_DIR": COMPILATION_CACHE,
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}
FASHION_TRAIN = 1024  # the tiny config's Fashion-MNIST training examples


def use_compilation_cache() -> None:
    """Points this process's jax at the tests' persistent compilation cache."""
    import jax

    jax.config.update("jax_compilation_cache_dir", COMPILATION_CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def tiny_config(dataset: str = "fashion_mnist", steps: int = 2) -> ml_collections.ConfigDict:
    """A two-stage, 16-px network and a short schedule on `dataset` (fast to compile and run)."""
    from configs import default

    c = default.get_config()
    m = c.model
    m.width, m.depth, m.resolution = 1.0, 1.0, 16
    m.blocks = ("r1_k3_s1_e1_c8_se0.25", "r2_k3_s2_e2_c16_se0.25")
    m.stem_channels, m.head_channels = 8, 32
    d = c.data
    d.name = dataset
    d.shuffle_buffer = 64
    d.prefetch = 1
    d.threads = 1
    if dataset == "fashion_mnist":
        # Small slices keep the input pipeline cheap; the trainer reads the sizes from the dataset info.
        d.train_split, d.eval_split = f"train[:{FASHION_TRAIN}]", "test[:40]"
        d.train_crop, d.cache = "none", True
    t = c.train
    t.batch_size, t.eval_batch_size = 8, 16
    t.num_steps = steps
    t.warmup_epochs = 0.0
    t.log_every_steps = 1
    t.eval_every_epochs = 1000.0  # only at the end
    t.checkpoint_every_steps = 2
    t.xla_flops = False
    return c


@contextlib.contextmanager
def mocked_dataset(name: str, num_examples: int, manual_dir: str):
    """Random examples in place of TFDS dataset `name`, with split sizes (mocked builders have none)."""
    import tensorflow_datasets as tfds

    eval_split = "validation" if name == "imagenet2012" else "test"
    splits = tfds.core.SplitDict(
        [tfds.core.SplitInfo(name=split, shard_lengths=[num_examples], num_bytes=0) for split in ("train", eval_split)]
    )
    with (
        tfds.testing.mock_data(num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE),
        mock.patch.object(tfds.core.DatasetInfo, "splits", new_callable=mock.PropertyMock, return_value=splits),
    ):
        yield


# A dataset that needs no files and whose global batches do not depend on how many processes
# read them (TFDS shares do): the same numbers on 1 x 8 devices and 2 x 4, so the comparison
# tests the trainer's parallelism alone. Test-only; effscale.data serves the real ones.
SYNTHETIC = "synthetic"
SYNTHETIC_TRAIN, SYNTHETIC_EVAL = 1024, 40


def _synthetic_examples(rng: np.random.Generator, n: int, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 10, n).astype(np.int32)
    images = rng.normal(size=(n, resolution, resolution, 3)).astype(np.float32)
    return images + (labels[:, None, None, None] / 5.0 - 1.0).astype(np.float32), labels


@contextlib.contextmanager
def synthetic_data():
    """Serves config.data.name='synthetic' through effscale.data's interface; other names pass through."""
    from effscale import data

    real_info, real_train, real_eval = data.dataset_info, data.train_batches, data.eval_batches

    def dataset_info(cfg):
        if cfg.name != SYNTHETIC:
            return real_info(cfg)
        return data.DatasetInfo(SYNTHETIC, 10, SYNTHETIC_TRAIN, SYNTHETIC_EVAL)

    def train_batches(cfg, resolution, batch_size, seed, start_step=0, process_index=0, process_count=1):
        if cfg.name != SYNTHETIC:
            yield from real_train(cfg, resolution, batch_size, seed, start_step, process_index, process_count)
            return
        for step in itertools.count(start_step):
            images, labels = _synthetic_examples(np.random.default_rng([seed, step]), batch_size * process_count,
                                                 resolution)  # fmt: skip
            share = slice(process_index * batch_size, (process_index + 1) * batch_size)
            yield {"image": images[share], "label": labels[share]}

    def eval_batches(cfg, resolution, batch_size, process_index=0, process_count=1):
        if cfg.name != SYNTHETIC:
            yield from real_eval(cfg, resolution, batch_size, process_index, process_count)
            return
        images, labels = _synthetic_examples(np.random.default_rng(12345), SYNTHETIC_EVAL, resolution)
        per = -(-SYNTHETIC_EVAL // process_count)
        rows = np.arange(process_index * per, min(SYNTHETIC_EVAL, (process_index + 1) * per))
        for start in range(0, -(-per // batch_size) * batch_size, batch_size):
            sel = rows[start : start + batch_size]
            batch = {
                "image": np.zeros((batch_size, resolution, resolution, 3), np.float32),
                "label": np.zeros(batch_size, np.int32),
                "mask": np.arange(batch_size) < len(sel),
            }
            batch["image"][: len(sel)], batch["label"][: len(sel)] = images[sel], labels[sel]
            yield batch

    with (
        mock.patch.object(data, "dataset_info", dataset_info),
        mock.patch.object(data, "train_batches", train_batches),
        mock.patch.object(data, "eval_batches", eval_batches),
    ):
        yield


def final_state(workdir, config):
    """The latest checkpoint of `workdir` (a run of `config`) as a TrainState on this process's devices."""
    from effscale import checkpoint
    from effscale.training import setup, state

    with synthetic_data():  # resolving the config reads the dataset's info
        run = setup.make_setup(config)
    manager = checkpoint.Manager(str(workdir), 1, 1)
    try:
        return manager.restore(state.abstract_state(run))
    finally:
        manager.close()


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """This file doubles as a config file: ``launch.py --config tests/train_support.py:DATASET``."""
    return tiny_config(arg or "fashion_mnist", steps=2)


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    """A subprocess's environment: CPU jax, the tests' compilation cache, this folder importable."""
    path = os.pathsep.join(p for p in (str(ROOT / "tests"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", **CACHE_ENV, "PYTHONPATH": path,
            **(extra or {})}  # fmt: skip


def launch(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    """Starts ``python launch.py ARGS`` at the repository root; the caller waits or signals."""
    return subprocess.Popen(
        [sys.executable, "launch.py", *args],
        cwd=ROOT,
        env=_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def python_process(code: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Starts `code` in a fresh interpreter at the repository root (for flags read when jax starts)."""
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 400) -> tuple[int, str, str]:
    """Runs `code` as `python_process` does and waits: (return code, stdout, stderr)."""
    proc = python_process(code, env)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def last_json_line(text: str) -> dict:
    """The last line of `text` that parses as a JSON object (a subprocess's answer)."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON line in output:\n{text[-3000:]}")
