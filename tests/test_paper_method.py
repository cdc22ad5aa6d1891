"""experiments/paper_method.py: the plan of experiments (a)-(d), its chunks and its ranking check.

No training here: the sweeps it runs are tested in test_sweep; this checks what it runs, in which
order and with which arguments, that a chunk stops its sweep at the deadline with SIGTERM, and
the 1-vs-2-epoch table against rows written by hand.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
from pathlib import Path

import pytest

from effscale import sweep

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("paper_method", ROOT / "experiments" / "paper_method.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


pm = _load()


def test_the_plan_runs_the_grid_first_and_the_found_line_only_once_there_is_a_pick():
    before = [e.name for e in pm.experiments(None)]
    assert before[:3] == ["abg_grid", "abg_grid_2ep", "compound/paper"] and "compound/found" not in before
    after = {e.name: e for e in pm.experiments("1.4/1.1/1.1")}
    assert "coefficients=1.4/1.1/1.1" in after["compound/found"].arg
    assert not after["abg_grid_2ep"].main and all(e.main for n, e in after.items() if n != "abg_grid_2ep")


def test_every_experiment_trains_one_epoch_with_three_seeds_except_the_two_epoch_check():
    for e in pm.experiments("1.4/1.1/1.1"):
        expanded = sweep.expand(pm.config_of(e))
        epochs = {cfg.train.num_epochs for _, cfg in expanded}
        seeds = {p.meta.get("seed", 0) for p, _ in expanded}
        if e.main:
            assert epochs == {1.0} and seeds == {0, 1, 2}, e.name
        else:  # the four checked candidates, seed 0, at 2 epochs
            assert epochs == {2.0} and seeds == {0} and len(expanded) == 4, e.name
    grid = sweep.expand(pm.config_of(pm.experiments(None)[0]))
    assert len(grid) == 33  # 11 candidates x 3 seeds
    assert {p.name for p, _ in sweep.expand(pm.config_of(pm.experiments(None)[1]))} <= {p.name for p, _ in grid}


def _row(network, seed, val, status="done"):
    return {"network": network, "point": network, "seed": seed, "status": status, "val_top1": val}


def test_the_ranking_check_says_whether_the_order_holds():
    one = [_row("a", 0, 0.90), _row("b", 0, 0.89), _row("c", 0, 0.88), _row("a", 1, 0.50)]
    holds = pm.ranking_check(one, [_row("a", 0, 0.92), _row("b", 0, 0.91), _row("c", 0, 0.905)])
    assert "| a | 90.00 | 1 | 92.00 | 1 |" in holds and "The order holds from 1 to 2 epochs over these 3" in holds
    changes = pm.ranking_check(one, [_row("a", 0, 0.90), _row("b", 0, 0.91), _row("c", 0, 0.905)])
    assert "| a | 90.00 | 1 | 90.00 | 3 |" in changes and "The order changes" in changes
    assert "Not enough finished points" in pm.ranking_check(one, [_row("a", 0, 0.9), _row("b", 0, 0.9, "pending")])


def test_a_chunk_stops_its_sweep_with_sigterm_at_the_deadline(monkeypatch, tmp_path):
    # A stand-in for launch.py that records the signal it gets: the chunk must ask it to save and stop.
    seen = tmp_path / "signal"
    stand_in = (
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda n, f: (open({str(seen)!r}, 'w').write(str(n)), sys.exit(0)))\n"
        "time.sleep(60)\n"
    )
    real_popen = pm.subprocess.Popen
    monkeypatch.setattr(pm.subprocess, "Popen", lambda command, cwd: real_popen([sys.executable, "-c", stand_in]))
    monkeypatch.setattr(pm, "POLL_S", 0.2)
    experiment = pm.experiments(None)[0]
    deadline = pm.Deadline(1.0 / 3600)  # a second from now
    assert pm._train(experiment, deadline, commit=False) == "stopped"
    assert seen.read_text() == str(int(signal.SIGTERM))


def test_a_signal_to_the_runner_ends_the_chunk_at_once():
    deadline = pm.Deadline(2.5)
    assert not deadline.passed()
    deadline.now(signal.SIGTERM, None)  # what its handler does
    assert deadline.passed()


def test_hours_must_be_positive(capsys):
    assert pm.main(["--hours", "0"]) == 2
    assert capsys.readouterr().err.strip() == "effscale: error: --hours=0.0: allowed: a positive number of hours."


@pytest.mark.parametrize("name", ["point.json", "checkpoints/1/x", "tb/events", ".jax_cache/x", "writer.lease"])
def test_only_the_records_are_kept_in_git(name):
    import subprocess

    path = f"experiments/sweeps/abg_grid/some-point/{name}"
    ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0
    assert ignored == (name not in ("point.json",))


def test_the_reproductions_timings_seed_the_cost_model_only_on_the_same_device():
    cpu = [{"device_kind": "cpu", "device_count": 1}]
    prior = pm.reproduction_timings(cpu)
    assert len(prior) == 9 and {(r["device_kind"], r["device_count"]) for r in prior} == {("cpu", 1)}
    assert min(r["macs"] for r in prior) < 1e7 < 5e7 < max(r["macs"] for r in prior)  # a range of MACs
    assert pm.reproduction_timings([{"device_kind": "NVIDIA H200", "device_count": 1}]) == []
    assert pm.reproduction_timings([*cpu, {"device_kind": "TPU v4", "device_count": 8}]) == []
