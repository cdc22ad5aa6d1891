"""What a gs:// workdir costs: seconds per checkpoint save and per record write, and the tiny run's images/s
with asynchronous checkpoints (and without, as the baseline), on a GCS-API emulator against a local directory.

    python benchmarks/storage.py                       # 3 rounds
    python benchmarks/storage.py --rounds 1 --writes 5 --saves 2 --steps 20

The bucket is tests/gcs_emulator.py's: gcp-storage-emulator in memory on loopback, started here
(needs requirements.txt's gcsfs and gcp-storage-emulator). It measures the requests effscale,
gcsfs, orbax and TensorStore make and the emulator's handling of them, not a real bucket's
latency or bandwidth. Each round measures local and gs:// in this one process, in alternating
order (the compiled programs come from JAX's persistent cache after the first); the table shows
medians over rounds.
The network and data are tests/train_support.py's tiny config (Fashion-MNIST slices, 16 px).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent


def _from_tests(name: str) -> Any:
    """tests/<name>.py as a module (the emulator and the tiny config live with the tests), loaded by path."""
    spec = importlib.util.spec_from_file_location(name, HERE.parent / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gcs_emulator = _from_tests("gcs_emulator")
train_support = _from_tests("train_support")

RECORD = HERE.parent / "tests" / "data" / "result_v0.json"  # a run record of the usual size


def per_call(fn: Callable[[int], Any], n: int) -> float:
    """Median seconds of `fn(k)` over k = 0 .. n-1."""
    times = []
    for k in range(n):
        start = time.perf_counter()
        fn(k)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def record_write_s(workdir: str, writes: int) -> float:
    from effscale import record

    obj = json.loads(RECORD.read_text())
    return per_call(lambda k: record.write_json(f"{workdir}/records/result-{k % 2}.json", obj), writes)


def checkpoint_save_s(workdir: str, saves: int) -> float:
    """Median seconds of a synchronous save of the tiny run's whole train state (step 0's)."""
    from effscale import checkpoint
    from effscale.training import setup, state

    run = setup.make_setup(train_support.tiny_config())
    fresh = state.fresh_state(run)
    manager = checkpoint.Manager(f"{workdir}/ckpt", 1, keep=2, asynchronous=False)
    try:
        return per_call(lambda k: manager.save(k + 1, fresh), saves)
    finally:
        manager.close()


def train_images_per_sec(workdir: str, steps: int, log_every: int, every: int | None) -> float:
    """The tiny run's measured train images/s, logging every `log_every` steps, with an asynchronous
    checkpoint every `every` steps (None: none until the last step, whose save comes after the timed loop)."""
    from effscale import train

    config = train_support.tiny_config(steps=steps)
    config.train.checkpoint_every_steps = every or steps
    config.train.async_checkpoints = True
    config.train.log_every_steps = log_every
    return train.train_and_evaluate(config, f"{workdir}/run").train_images_per_sec


def one_round(local: str, bucket: str, args: argparse.Namespace, local_first: bool) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    places = [("local", local), ("gs://", bucket)]
    for where, root in places if local_first else places[::-1]:
        out[where] = {
            "record write (s)": record_write_s(root, args.writes),
            "checkpoint save (s)": checkpoint_save_s(root, args.saves),
            f"train images/s (async checkpoint every {args.every} steps)": train_images_per_sec(
                f"{root}/every", args.steps, args.every, args.every
            ),
            "train images/s (no checkpoint while training)": train_images_per_sec(
                f"{root}/none", args.steps, args.every, None
            ),
        }
    return out


def table(rounds: list[dict[str, dict[str, float]]]) -> str:
    rows = list(rounds[0]["local"])
    width = max(len(r) for r in rows)
    lines = [f"{'':<{width}}  {'local':>12}  {'gs:// (emulator)':>16}  {'gs:// / local':>13}"]
    for row in rows:
        local = statistics.median(r["local"][row] for r in rounds)
        remote = statistics.median(r["gs://"][row] for r in rounds)
        lines.append(f"{row:<{width}}  {local:>12.4g}  {remote:>16.4g}  {remote / local:>13.2f}")
    lines.append(f"medians over {len(rounds)} round(s)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writes", type=int, default=20, help="record writes per round and place")
    parser.add_argument("--saves", type=int, default=5, help="checkpoint saves per round and place")
    parser.add_argument("--steps", type=int, default=60, help="train steps of each run")
    parser.add_argument("--every", type=int, default=10, help="checkpoint (and log) interval of the runs")
    args = parser.parse_args()
    train_support.use_compilation_cache()
    rounds = []
    with gcs_emulator.running(bucket="bench") as gcs, tempfile.TemporaryDirectory() as local:
        for k in range(args.rounds):
            # Which place goes first alternates: the first run of a process warms caches the second finds warm.
            rounds.append(one_round(f"{local}/{k}", gcs.url(str(k)), args, local_first=k % 2 == 0))
            print(f"round {k + 1}/{args.rounds}: {json.dumps(rounds[-1])}", file=sys.stderr)
    print(table(rounds))


if __name__ == "__main__":
    main()
