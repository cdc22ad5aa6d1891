"""The benchmark's jobs: what each worker process measures, the environment it starts with, and running it.

Used by benchmarks/train_step.py; every job is a JSON-able dict handed to benchmarks/workers.py.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any

from effscale import host, spec

WORKER = pathlib.Path(__file__).resolve().parent / "workers.py"
# The Python modules each framework needs (checked without importing them); also the frameworks' names.
REQUIREMENTS = {
    "effscale": ("jax", "flax"),
    "torch_cl": ("torch", "timm"),
    "torch": ("torch", "timm"),
    "keras_tf": ("keras", "tensorflow"),
    "keras_jax": ("keras", "jax"),
}
FRAMEWORKS = tuple(REQUIREMENTS)
HUGEPAGES = ("effscale", "all", "none")  # which workers start with effscale.host's huge pages


def available(framework: str) -> bool:
    """Whether `framework`'s packages are importable here (checked without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in REQUIREMENTS[framework])


def _value(text: str) -> Any:
    """A Python literal (0.5, True, None) or, failing that, the text itself (block, bfloat16)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def variant_overrides(variant: str) -> dict[str, Any]:
    """'remat=block+dtype=bfloat16' -> {'remat': 'block', 'dtype': 'bfloat16'}; 'default' -> {}."""
    if variant in ("", "default"):
        return {}
    out = {}
    for item in variant.split("+"):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"Variant item {item!r} must be field=value (a config.model field).")
        out[key.strip()] = _value(value.strip())
    return out


def _variant_model(model_cfg: dict[str, Any], variant: str) -> dict[str, Any]:
    overrides = variant_overrides(variant)
    unknown = sorted(set(overrides) - set(model_cfg))
    if unknown:
        raise ValueError(f"Variant {variant!r}: {', '.join(unknown)} not config.model fields.")
    return {**model_cfg, **overrides}


def _model_config(config: Any, resolution: int | None) -> dict[str, Any]:
    """config.model as a dict, with the benchmark's resolution and ImageNet's class count filled in."""
    model_cfg = config.model.to_dict()
    if resolution:
        model_cfg["resolution"] = resolution
    if model_cfg.get("num_classes") is None:
        model_cfg["num_classes"] = 1000
    return model_cfg


def _effscale_jobs(
    common: dict[str, Any],
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    variants: list[str],
    malloc_trim: bool,
    hugepages: str,
) -> list[dict]:
    """One effscale job per variant."""
    return [
        {
            **common,
            "framework": "effscale",
            "name": "effscale" + ("" if v == "default" else f"[{v}]"),
            "model": _variant_model(model_cfg, v),
            "train": train_cfg,
            "malloc_trim": malloc_trim,
            "hugepages": hugepages != "none",
        }
        for v in variants
    ]


def _reference_job(
    common: dict[str, Any],
    name: str,
    net: spec.NetworkSpec,
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    torch_threads: int,
    hugepages: str,
) -> dict:
    """The job of a reference framework (timm or Keras); 'torch_cl@1' pins its thread count (torch only)."""
    fw, _, threads = name.partition("@")
    preset = str(model_cfg.get("preset") or "b0").lower()
    return {
        **common,
        "framework": fw,
        "name": name,
        "preset": preset,
        "timm_model": f"efficientnet_{preset}",
        "dropout": net.dropout,
        "drop_path": float(model_cfg.get("drop_path", 0.2)),
        "torch_threads": int(threads) if threads else torch_threads,
        "train_cfg": train_cfg,
        "hugepages": hugepages == "all",
    }


def make_jobs(
    config: Any,
    *,
    resolution: int | None,
    batch: int,
    frameworks: list[str],
    variants: list[str],
    steps: int,
    warmup: int,
    max_seconds: float,
    train_only: bool,
    scheduler_flag: bool,
    torch_threads: int = 0,
    malloc_trim: bool = False,
    hugepages: str = "effscale",
) -> list[dict]:
    """One job per (framework, effscale variant): what a worker process needs, as JSON-able dicts."""
    if hugepages not in HUGEPAGES:
        raise ValueError(f"hugepages must be one of {HUGEPAGES}, got {hugepages!r}.")
    model_cfg = _model_config(config, resolution)
    net = spec.build(model_cfg)
    train_cfg = config.train.to_dict()
    common = {
        "batch": batch,
        "resolution": net.resolution,
        "num_classes": net.num_classes,
        "steps": steps,
        "warmup": warmup,
        "max_seconds": max_seconds,
        "train_only": train_only,
        "scheduler_flag": scheduler_flag,
    }
    jobs = []
    for name in frameworks:
        fw = name.partition("@")[0]
        if fw not in FRAMEWORKS:
            raise ValueError(f"Unknown framework {fw!r}: choose from {', '.join(FRAMEWORKS)}.")
        if fw == "effscale":
            jobs += _effscale_jobs(common, model_cfg, train_cfg, variants, malloc_trim, hugepages)
        else:
            jobs.append(_reference_job(common, name, net, model_cfg, train_cfg, torch_threads, hugepages))
    return jobs


def worker_env(job: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    """`env` with the process settings `job` asks for (effscale.host), for its worker to start with."""
    env = {**env, "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    if job.get("scheduler_flag"):
        env = host.with_xla_flags(env)
    if job.get("hugepages") and host.hugepages_help():
        env = host.with_hugepages(env)
    return env


def run_worker(job: dict[str, Any], timeout: int) -> dict[str, Any]:
    """Runs one job in a fresh Python process; returns its result or {'error': ...}."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, str(WORKER), json.dumps(job)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=worker_env(job, dict(os.environ)),
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    wall = time.perf_counter() - start
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT:"):
            return {**json.loads(line[len("RESULT:") :]), "process_wall_s": wall}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
