"""benchmarks/: jobs, the workers' environment, the tables, and a tiny end-to-end run of effscale alone."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

from effscale import host

BENCH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name):
    """A module of benchmarks/ (a folder of scripts, not a package) by its path."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


jobs, report, workers = _load("jobs"), _load("report"), _load("workers")


def _config():
    from configs import efficientnet

    return efficientnet.get_config("b0")


def test_variant_overrides():
    assert jobs.variant_overrides("default") == {}
    assert jobs.variant_overrides("remat=block+dtype=bfloat16") == {"remat": "block", "dtype": "bfloat16"}
    assert jobs.variant_overrides("width=0.5+include_top=False") == {"width": 0.5, "include_top": False}
    with pytest.raises(ValueError, match="field=value"):
        jobs.variant_overrides("remat")


def test_jobs_per_framework_and_variant():
    kwargs = dict(steps=1, warmup=1, max_seconds=1.0, train_only=True, scheduler_flag=False)
    todo = jobs.make_jobs(
        _config(), resolution=32, batch=4, frameworks=["effscale", "torch_cl@1"], variants=["default", "remat=block"],
        **kwargs,
    )  # fmt: skip
    assert [j["name"] for j in todo] == ["effscale", "effscale[remat=block]", "torch_cl@1"]
    assert {j["resolution"] for j in todo} == {32} and {j["num_classes"] for j in todo} == {1000}
    assert todo[1]["model"]["remat"] == "block" and todo[0]["model"]["remat"] == "none"
    assert todo[2]["torch_threads"] == 1 and todo[2]["timm_model"] == "efficientnet_b0"
    assert [j["hugepages"] for j in todo] == [True, True, False]  # the default: effscale's workers only
    with pytest.raises(ValueError, match="widht not config.model fields"):
        jobs.make_jobs(_config(), resolution=32, batch=4, frameworks=["effscale"], variants=["widht=2"], **kwargs)
    with pytest.raises(ValueError, match="Unknown framework 'mxnet'"):
        jobs.make_jobs(_config(), resolution=32, batch=4, frameworks=["mxnet"], variants=["default"], **kwargs)


def test_every_framework_has_a_worker():
    assert set(workers.RUNNERS) == set(jobs.FRAMEWORKS)


def test_worker_env_carries_the_process_settings_asked_for():
    flag = f"{host.SCHEDULER_FLAG}=false"
    base = {"PATH": "/bin", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    on = jobs.worker_env({"scheduler_flag": True, "hugepages": True}, base)
    assert on["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {flag}"
    assert (host.TUNABLE in on.get("GLIBC_TUNABLES", "")) == host.hugepages_help()
    off = jobs.worker_env({"scheduler_flag": False, "hugepages": False}, base)
    assert off["XLA_FLAGS"] == base["XLA_FLAGS"] and "GLIBC_TUNABLES" not in off
    assert base == {"PATH": "/bin", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def test_table_ratios():
    rows = [
        {"name": "effscale", "train_images_per_s": 20.0, "infer_images_per_s": 100.0},
        {"name": "torch", "train_images_per_s": 10.0, "infer_images_per_s": 200.0},
        {"name": "keras_tf", "error": "exit 1: boom"},
    ]
    text = report.table(rows, 32, 4)
    torch_line = next(line for line in text.splitlines() if line.startswith("torch"))
    assert "2.00" in torch_line and "0.50" in torch_line
    assert "error: exit 1: boom" in text


def test_aggregate_takes_medians_over_the_rounds_that_ran():
    def result(train, infer):
        return {"train": {"images_per_s": train}, "infer": {"images_per_s": infer}, "peak_rss_bytes": 1}

    row = report.aggregate("x", [result(10.0, 50.0), {"error": "exit 1"}, result(30.0, 70.0), result(20.0, 60.0)])
    assert (row["rounds_ok"], row["rounds"]) == (3, 4)
    assert (row["train_images_per_s"], row["infer_images_per_s"]) == (20.0, 60.0)
    assert report.aggregate("y", [{"error": "exit 1"}])["error"] == "exit 1"


def test_benchmark_runs_effscale_tiny(tmp_path):
    """From another directory, without PYTHONPATH: --noscheduler_flag reaches the worker (the library sets nothing)."""
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        str(BENCH / "train_step.py"),
        "--frameworks=effscale",
        "--resolution=32",
        "--batch=4",
        "--rounds=1",
        "--steps=1",
        "--warmup=1",
        "--noscheduler_flag",
        "--config.model.width=0.25",
        "--config.model.depth=0.25",
        f"--json={out}",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "effscale" in proc.stdout
    result = json.loads(out.read_text())
    row = result["summary"][0]
    assert row["name"] == "effscale" and "error" not in row, row
    assert row["train_images_per_s"] > 0 and row["infer_images_per_s"] > 0
    assert row["peak_rss_train_bytes"] > 0 and row["compile_s"] > 0
    raw = result["raw"]["effscale"][0]
    assert raw["train_memory"]["temp"] > 0
    assert raw["depthwise"] in ("native", "shift_vjp")
    assert host.SCHEDULER_FLAG not in raw["xla_flags"]
    assert (host.TUNABLE in raw["glibc_tunables"]) == host.hugepages_help()
