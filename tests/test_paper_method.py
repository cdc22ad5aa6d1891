"""experiments/paper_method.py: the plan of experiments (a)-(d), its chunks and its ranking check.

No training here: the sweeps it runs are tested in test_sweep; this checks what it runs, in which
order and with which arguments, that a chunk stops its sweep at the deadline with SIGTERM, and
the 1-vs-2-epoch table against rows written by hand.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
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


def _chunks(directory: Path, *cpus: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "chunks.jsonl").write_text("".join(json.dumps({"hours": 1.0, "cpus": n}) + "\n" for n in cpus))


def test_reproduction_timings_seed_the_cost_model_on_the_same_device_until_own_points_span_macs(tmp_path, monkeypatch):
    monkeypatch.setattr(pm, "SWEEPS", tmp_path)
    _chunks(tmp_path, 2, 2)
    cpu = [{"device_kind": "cpu", "device_count": 1}]
    prior = pm.reproduction_timings(cpu)
    assert len(prior) == 9 and {(r["device_kind"], r["device_count"]) for r in prior} == {("cpu", 1)}
    assert min(r["macs"] for r in prior) < 1e7 < 5e7 < max(r["macs"] for r in prior)  # a range of MACs
    assert pm.reproduction_timings([{"device_kind": "NVIDIA H200", "device_count": 1}]) == []
    assert pm.reproduction_timings([*cpu, {"device_kind": "TPU v4", "device_count": 8}]) == []
    _chunks(tmp_path, 2, 8)  # a chunk ran on a machine of another size: its CPU is not the reproduction's
    assert pm.reproduction_timings(cpu) == []
    _chunks(tmp_path, 2, 2)
    narrow = [dict(cpu[0], macs=m) for m in (3.4e7, 3.4e7, 8.5e6 * 3.9)]
    assert len(pm.reproduction_timings(narrow)) == 9
    wide = [*narrow, dict(cpu[0], macs=8.5e6)]  # own points from 8.5M to 34M MACs: 4x, enough to fit on
    assert pm.reproduction_timings(wide) == []


def test_predictions_made_before_points_ran_are_checked_against_what_they_measured(tmp_path, monkeypatch):
    monkeypatch.setattr(pm, "SWEEPS", tmp_path)
    made = [
        {"made": "2026-12-03T10:00:00Z", "run": "g/a", "predicted_s": 150.0, "state": "pending"},
        {"made": "2026-12-03T12:00:00Z", "run": "g/a", "predicted_s": 110.0, "state": "pending"},  # the latest counts
        {"made": "2026-12-03T12:00:00Z", "run": "g/b", "predicted_s": 50.0, "state": "partial"},  # already running
        {
            "made": "2026-12-03T12:00:00Z",
            "run": "g/c",
            "predicted_s": 80.0,
            "state": "pending",
            "predicted_wall_s": 156.0,
        },
    ]
    (tmp_path / pm.PREDICTIONS).write_text("".join(json.dumps(m) + "\n" for m in made))

    def row(point):  # 100 s of training measured, 120 s of wall time
        return {
            "sweep_dir": "g",
            "point": point,
            "train_images_per_sec": 100.0,
            "steps": 1000,
            "batch_size": 10,
            "wall_time_s": 120.0,
        }

    errors = pm.prediction_errors([row("a"), row("b"), row("c"), row("d")])
    assert errors == pytest.approx({"g/a": 0.10, "g/c": -0.20})
    assert pm.prediction_summary([row("a"), row("c")]) == (
        "predictions made before points ran, checked on 2: median error -5% (from -20% to +10%); "
        "wall time, checked on 1: median error +30% (from +30% to +30%)"
    )
    assert pm.prediction_errors([row("a")], "predicted_wall_s") == {}  # g/a's wall time was not predicted


def test_a_failed_probe_leaves_the_predictions_for_a_usual_machine(monkeypatch, capsys):
    failed = subprocess.CompletedProcess([], 2, "", "effscale: error: something is wrong\n")
    monkeypatch.setattr(pm.subprocess, "run", lambda *a, **k: failed)
    assert pm.probe() is None and pm.machine_speed() is None
    assert "machine probe failed (exit status 2: effscale: error: something is wrong)" in capsys.readouterr().out


def test_the_machine_speed_compares_the_probe_with_the_cost_models_prediction(monkeypatch, capsys):
    def run(macs, acts, seconds):  # seconds per image = 1e-10 x MACs + 1e-9 x activations
        return {
            "status": "done",
            "point": f"{macs:g}/{acts:g}",
            "macs": macs,
            "activations": acts,
            "device_kind": "cpu",
            "device_count": 1,
            "train_images_per_sec": 1.0 / seconds,
        }

    counts = [(1e7, 1e5), (2e7, 3e5), (3e7, 1e5), (5e7, 6e5)]
    monkeypatch.setattr(pm, "finished_rows", lambda exps: [run(m, a, 1e-10 * m + 1e-9 * a) for m, a in counts])
    monkeypatch.setattr(pm, "probe", lambda: run(1e7, 4e5, 0.5 * (1e-10 * 1e7 + 1e-9 * 4e5)))
    assert pm.machine_speed() == pytest.approx(0.5)
    assert (
        "trains B0 at 1429 images/s, 0.50x the time per image the cost model predicts for it" in capsys.readouterr().out
    )


def test_noise_summary_reports_how_far_repeats_of_a_network_disagree():
    def run(point, network, macs, acts, seconds):
        return {
            "point": point,
            "network": network,
            "status": "done",
            "macs": macs,
            "activations": acts,
            "train_images_per_sec": 1.0 / seconds,
            "device_kind": "cpu",
            "device_count": 1,
        }

    assert pm.noise_summary([run("a", "a", 1e7, 1e5, 0.01)]) == "timing noise: no network has run twice yet"
    # Four networks on k1 * MACs + k2 * activations + c exactly (medians); network a's seeds at 0.8x, 1x, 1.5x.
    exact = lambda m, a: 1e-9 * m + 1e-8 * a + 1e-3  # noqa: E731
    counts = [(1e7, 1e5), (2e7, 3e5), (3e7, 1e5), (5e7, 6e5)]
    rows = [run(f"a_s{s}", "a", *counts[0], f * exact(*counts[0])) for s, f in enumerate((0.8, 1.0, 1.5))]
    rows += [run(f"n{k}", f"n{k}", m, a, exact(m, a)) for k, (m, a) in enumerate(counts[1:], 1)]
    assert pm.noise_summary(rows) == (
        "timing noise: 3 runs of repeated networks lie -20% to +50% from their network's median time per image "
        "(median |deviation| 20%); the cost model fitted on them, each network left out: median |error| 0%"
    )


# ----------------------------------------------------------------------------- the runner's git and signals


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git work tree standing in for the project's, with ROOT and SWEEPS pointed at it."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    root = tmp_path / "project"
    root.mkdir()
    _git(root, "init", "-q")
    _git(root, "config", "user.useConfigOnly", "true")  # no identity guessed from the host name
    monkeypatch.setattr(pm, "ROOT", root)
    monkeypatch.setattr(pm, "SWEEPS", root / "experiments" / "sweeps")
    return root


def _point(sweeps: Path, name: str, finished: bool) -> Path:
    pdir = sweeps / "grid" / name
    (pdir / "checkpoints" / "5").mkdir(parents=True)
    for f in ("point.json", "fingerprint.json", "metrics.jsonl", *(["result.json"] if finished else [])):
        (pdir / f).write_text("{}\n")
    (pdir / "checkpoints" / "5" / "state").write_text("weights")
    return pdir


def test_commit_records_commits_only_finished_points_records_and_leaves_other_staged_work(repo):
    _git(repo, "config", "user.name", "t")
    _git(repo, "config", "user.email", "t@example.com")
    assert pm.commit_problem() is None
    _point(pm.SWEEPS, "done-point", finished=True)
    _point(pm.SWEEPS, "running-point", finished=False)
    (repo / "notes.txt").write_text("someone's work in progress")
    _git(repo, "add", "notes.txt")
    assert pm.commit_records() is None
    committed = sorted(_git(repo, "show", "--name-only", "--format=", "HEAD").split())
    assert committed == [f"experiments/sweeps/grid/done-point/{f}" for f in
                         ("fingerprint.json", "metrics.jsonl", "point.json", "result.json")]  # fmt: skip
    assert "1 finished points" in _git(repo, "log", "-1", "--format=%s")
    assert _git(repo, "diff", "--cached", "--name-only").split() == ["notes.txt"]  # still staged, not committed
    assert pm.commit_records() is None and len(_git(repo, "log", "--format=%h").split()) == 1  # nothing new
    (repo / ".git" / "index.lock").write_text("")  # another git command holds the index
    (pm.SWEEPS / "grid" / "done-point" / "metrics.jsonl").write_text("{}\n{}\n")
    problem = pm.commit_records()
    assert problem is not None and "index.lock" in problem


def test_a_commit_failing_poll_after_poll_stops_the_chunk(monkeypatch):
    monkeypatch.setattr(pm, "commit_records", lambda: "fatal: Unable to create '.git/index.lock': File exists.")
    failures = 0
    for _ in range(pm.COMMIT_TRIES - 1):
        failures = pm._commit_or_count(True, failures)
    assert failures == pm.COMMIT_TRIES - 1
    with pytest.raises(pm.CommitFailed, match="failed 15 times in a row .*index.lock.*fix git, commit them"):
        pm._commit_or_count(True, failures)
    monkeypatch.setattr(pm, "commit_records", lambda: None)
    assert pm._commit_or_count(True, failures) == 0  # one that lands resets the count


def test_commit_is_refused_before_training_without_a_git_identity_or_outside_a_work_tree(repo, capsys, tmp_path):
    assert pm.run_chunk(1.0, commit=True) == 2
    assert capsys.readouterr().err.strip() == (
        "effscale: error: --commit: git has no committer identity here; "
        "set `git config user.name` and `git config user.email`"
    )
    pm.ROOT = tmp_path / "elsewhere"  # monkeypatch restores it
    pm.ROOT.mkdir()
    assert "is not a git work tree; run without --commit" in pm.commit_problem()


def test_the_runner_takes_sigterm_as_its_deadline_and_restores_the_handlers(repo, monkeypatch):
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    seen = []

    def train(e, deadline, commit):  # a scheduler's SIGTERM reaches the runner while the sweep trains
        os.kill(os.getpid(), signal.SIGTERM)
        seen.append((e.name, deadline.passed()))
        return "stopped"

    monkeypatch.setattr(pm, "_train", train)
    assert pm.run_chunk(2.5, commit=False) == 0
    assert seen == [("abg_grid", True)]  # the chunk ended after the first sweep, not 2.5 hours later
    assert {sig: signal.getsignal(sig) for sig in before} == before
    logged = json.loads((pm.SWEEPS / "chunks.jsonl").read_text())
    assert logged["hours"] < 0.01 and logged["cpus"] == os.cpu_count()


def test_an_error_in_the_runner_stops_the_sweep_it_started(monkeypatch, tmp_path):
    seen = tmp_path / "signal"
    stand_in = (
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda n, f: (open({str(seen)!r}, 'w').write(str(n)), sys.exit(0)))\n"
        "time.sleep(60)\n"
    )
    real_popen = pm.subprocess.Popen
    monkeypatch.setattr(pm.subprocess, "Popen", lambda command, cwd: real_popen([sys.executable, "-c", stand_in]))
    monkeypatch.setattr(pm, "POLL_S", 0.5)

    def broken():
        raise OSError("git is gone")

    monkeypatch.setattr(pm, "commit_records", broken)
    with pytest.raises(OSError, match="git is gone"):
        pm._train(pm.experiments(None)[0], pm.Deadline(1.0), commit=True)
    assert seen.read_text() == str(int(signal.SIGTERM))  # not left running without its runner
