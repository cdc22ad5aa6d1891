"""Side-by-side speed, compile time and memory of effscale and the frameworks a user would pick instead.

    python benchmarks/train_step.py                     # B0, 224 px, batch 32, all frameworks installed
    python benchmarks/train_step.py --resolution 32 --batch 128 --rounds 3
    python benchmarks/train_step.py --frameworks effscale --variants default,remat=block,dtype=bfloat16 --train_only
    python benchmarks/train_step.py --compile_only --presets b0,b1,b2,b3,b4,b5,b6,b7 --batch 2
    python benchmarks/train_step.py --config configs/compound_phi2.py --config.model.depthwise=xla --json out.json

Each measurement runs in a fresh process (benchmarks/workers.py), so its peak RSS is its own,
and the frameworks take turns round-robin (round 1: effscale, torch, keras, ...; round 2: the
same again), so a slow spell of a shared machine hits all of them alike. Workers start with
effscale.host's process settings in their environment: XLA:CPU's concurrency-optimised
scheduler off (--noscheduler_flag: XLA's default) and, for effscale's workers, glibc's malloc on
transparent huge pages, as launch.py runs (--hugepages=all gives every framework the same,
--hugepages=none none). Reported figures are medians over rounds of each round's median step
time after warm-up. Ratios are effscale's images/s divided by the framework's (above 1:
effscale is faster).

Frameworks: effscale (the trainer's own `train_step`: RMSProp, EMA, label smoothing, BatchNorm
statistics, donated state), torch_cl / torch (timm's efficientnet_bN, channels_last or NCHW;
on a GPU bfloat16 autocast + channels_last), keras_tf / keras_jax (keras.applications). The
ones not installed are skipped with a note.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

# jobs and report: this script's sibling modules (Python puts a script's own folder first on the import path).
import jobs
import report
from absl import app, flags
from ml_collections import config_flags

HERE = pathlib.Path(__file__).resolve().parent

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(HERE.parent / "configs" / "efficientnet.py"), "effscale config file (+ --config.x.y=v overrides)."
)
_RESOLUTION = flags.DEFINE_integer("resolution", None, "Input resolution (default: the config's).")
_BATCH = flags.DEFINE_integer("batch", 32, "Batch size of the train and inference steps.")
_FRAMEWORKS = flags.DEFINE_list(
    "frameworks", list(jobs.FRAMEWORKS), f"Any of {', '.join(jobs.FRAMEWORKS)}; torch_cl@1 pins torch to 1 thread."
)
_VARIANTS = flags.DEFINE_list(
    "variants",
    ["default"],
    "effscale variants measured side by side: 'default' or model-field overrides joined by '+', "
    "e.g. remat=block+dtype=bfloat16.",
)
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Round-robin rounds (one fresh process per framework per round).")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per phase (train, inference) and process.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps first (the first holds compilation).")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 60.0, "Stop timing a phase after this long (at least 2 steps).")
_TRAIN_ONLY = flags.DEFINE_bool("train_only", False, "Skip the inference phase.")
_SCHEDULER = flags.DEFINE_bool(
    "scheduler_flag", True, "Turn off XLA:CPU's concurrency-optimised scheduler in the workers, as launch.py does."
)
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "effscale only: compile times and XLA memory, no steps.")
_PRESETS = flags.DEFINE_list("presets", [], "--compile_only: presets to compile (e.g. b0,b1,...,b7).")
_JSON = flags.DEFINE_string("json", None, "Also write every measurement to this JSON file.")
_MALLOC_TRIM = flags.DEFINE_bool(
    "malloc_trim",
    True,
    "effscale: hand the compiler's freed heap back to the OS after compiling, as the trainer does.",
)
_HUGEPAGES = flags.DEFINE_enum(
    "hugepages",
    "effscale",
    list(jobs.HUGEPAGES),
    "Which workers start with glibc's malloc on transparent huge pages (effscale.host): effscale's "
    "(as launch.py runs it), every framework's (what the others gain from the same setting), or none.",
)
_TORCH_THREADS = flags.DEFINE_integer(
    "torch_threads", 0, "torch intra-op threads (0: torch's default, one per core; see workers.run_torch)."
)
_TIMEOUT = flags.DEFINE_integer("timeout", 1800, "Seconds before a worker process is killed.")


def run_compile_only(
    config: Any, presets: list[str], resolution: int | None, batch: int, variants: list[str], timeout: int
) -> list[dict[str, Any]]:
    """Compiles the effscale train and inference steps of each preset (and variant) in fresh processes."""
    out = []
    for preset in presets or [config.model.preset]:
        cfg = config.copy_and_resolve_references()
        with cfg.unlocked():
            cfg.model.preset = preset
        todo = jobs.make_jobs(
            cfg,
            resolution=resolution,
            batch=batch,
            frameworks=["effscale"],
            variants=variants,
            steps=0,
            warmup=0,
            max_seconds=0,
            train_only=False,
            scheduler_flag=_SCHEDULER.value,
        )
        for job in todo:
            result = jobs.run_worker({**job, "compile_only": True}, timeout)
            name = preset if job["name"] == "effscale" else f"{preset}{job['name'][len('effscale') :]}"
            out.append({**result, "name": name, "resolution": job["resolution"], "batch": batch})
            print(report.compile_table(out[-1:]).splitlines()[-1], flush=True)
    return out


def run_rounds(todo: list[dict[str, Any]], rounds: int, timeout: int) -> dict[str, list[dict[str, Any]]]:
    """Every job once per round, round-robin; each result as it comes."""
    raw: dict[str, list[dict[str, Any]]] = {j["name"]: [] for j in todo}
    for rnd in range(rounds):
        for job in todo:
            result = jobs.run_worker(job, timeout)
            raw[job["name"]].append(result)
            if "error" in result:
                print(f"round {rnd + 1} {job['name']}: error: {result['error']}", flush=True)
                continue
            infer = result.get("infer", {}).get("images_per_s")
            print(
                f"round {rnd + 1} {job['name']}: train {result['train']['images_per_s']:.1f} img/s, "
                f"infer {report.fmt(infer)} img/s, peak RSS {result['peak_rss_after_train_bytes'] / report.GB:.2f} GB",
                flush=True,
            )
    return raw


def main(argv: list[str]) -> None:
    """Runs the benchmark described by the flags and prints the tables."""
    del argv
    config = _CONFIG.value
    if _COMPILE_ONLY.value:
        results = run_compile_only(
            config, _PRESETS.value, _RESOLUTION.value, _BATCH.value, _VARIANTS.value, _TIMEOUT.value
        )
        print(report.compile_table(results))
        if _JSON.value:
            pathlib.Path(_JSON.value).write_text(json.dumps({"compile": results}, indent=1))
        return
    frameworks = []
    for fw in _FRAMEWORKS.value:
        if jobs.available(fw.partition("@")[0]):
            frameworks.append(fw)
        else:
            print(f"note: {fw} is not installed here; skipped.", flush=True)
    todo = jobs.make_jobs(
        config,
        resolution=_RESOLUTION.value,
        batch=_BATCH.value,
        frameworks=frameworks,
        variants=_VARIANTS.value,
        steps=_STEPS.value,
        warmup=_WARMUP.value,
        max_seconds=_MAX_SECONDS.value,
        train_only=_TRAIN_ONLY.value,
        scheduler_flag=_SCHEDULER.value,
        torch_threads=_TORCH_THREADS.value,
        malloc_trim=_MALLOC_TRIM.value,
        hugepages=_HUGEPAGES.value,
    )
    raw = run_rounds(todo, _ROUNDS.value, _TIMEOUT.value)
    rows = [report.aggregate(name, results) for name, results in raw.items()]
    resolution = todo[0]["resolution"] if todo else _RESOLUTION.value
    print(report.table(rows, resolution, _BATCH.value))
    if _JSON.value:
        payload = {"resolution": resolution, "batch": _BATCH.value, "rounds": _ROUNDS.value}
        payload.update(summary=rows, raw=raw)
        pathlib.Path(_JSON.value).write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    app.run(main)
