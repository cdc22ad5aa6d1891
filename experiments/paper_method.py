"""The paper's method on Fashion-MNIST with seeds, run in resumable chunks: experiments (a) to (d).

    python experiments/paper_method.py --hours 2.5 --commit   # the next chunk: trains until the time is up
    python experiments/paper_method.py --status               # per experiment: done / pending, predicted hours
    python experiments/paper_method.py --no-train             # tables, figures, claims report from the records

Experiments, in the order they run (each a sweep config in a workdir of experiments/sweeps/, all
points at 1 epoch, B0 at 32 px and the small recipe of configs/sweeps/base.py):

- (a) `abg_grid`: the alpha / beta / gamma grid at phi = 1, every candidate solved to the same
  multiply-adds (4x B0, configs/sweeps/abg_grid.py `target=auto`), 3 seeds; the candidate with
  the best validation top-1 is the grid's pick (effscale.report);
- (a') `abg_grid_2ep`: four candidates again at 2 epochs, seed 0 (the depth-only, width-only and
  resolution-only extremes and the paper's), to see whether the ranking holds from 1 to 2 epochs;
- (b) `compound/found` and `compound/paper`: compound lines phi 0..3 with the grid's pick (once
  (a) is complete) and with the paper's 1.2 / 1.1 / 1.15, 3 seeds;
- (d) `equal_flops`: every strategy at 3.8x and 8x B0, 3 seeds;
- (c) `lines/width`, `lines/depth`, `lines/resolution`: each dimension alone to 16x B0's
  multiply-adds in doublings, 3 seeds; `fig4`: width at two depths and two resolutions, 3 seeds.

A chunk runs the experiments' sweeps one after another through launch.py (finished points are
skipped, an interrupted one resumes from its checkpoint), after timing PROBE_STEPS of B0 on its
machine to scale the cost model's predictions (costmodel.machine_speed); at the deadline it sends
SIGTERM, so the running point saves and stops. With --commit, each finished point's records (point.json,
fingerprint.json, result.json, metrics.jsonl; checkpoints are .gitignored) are committed to git as
they land, so that a chunk on any machine continues where the last one stopped. --no-train writes
experiments/results/method/: the table and grouped table of (a)-(d), the 1-vs-2-epoch ranking,
figures, and the claims report.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "experiments" / "sweeps"
RESULTS = ROOT / "experiments" / "results" / "method"
EPOCHS = "epochs=1"
SEEDS = "seeds=3"
# The 2-epoch check: all depth, all width, all resolution, and the paper's coefficients.
RANKING_CHECK = "abg-a2-b1-g1-*/abg-a1-b1.4-g1-*/abg-a1-b1-g1.4-*/abg-a1.2-b1.1-g1.15-*"
POLL_S = 20.0
STOP_GRACE_S = 600.0  # how long a stopped point may take to save
PREDICTIONS = "predictions.jsonl"  # under SWEEPS: the cost model's predictions, made as each chunk starts
COMMIT_TRIES = 15  # polls in a row whose commit failed before the chunk stops (~5 minutes)
REPRODUCTION_CPUS = 2  # the committed reproduction's timings were taken on this project's 2-core machines
# B0 steps a chunk times first (~20 s of compiling, a few seconds of steps): how fast its machine is.
PROBE_STEPS = 150
PROBE_FLAGS = (
    f"--config.train.num_steps={PROBE_STEPS}",
    "--config.train.log_every_steps=25",
    "--config.data.validation=none",
)
OWN_SPAN = 4.0  # max / min MACs of the experiments' own finished points beyond which the reproduction's are dropped


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str  # its workdir under experiments/sweeps/
    config: str  # configs/sweeps/<file>.py
    arg: str  # the config argument, without the grid's pick (filled in at run time)
    main: bool = True  # part of the table of (a)-(d); the 2-epoch check is kept apart

    @property
    def workdir(self) -> Path:
        return SWEEPS / self.name


def experiments(pick: str | None) -> list[Experiment]:
    """The experiments in running order; (b)'s found line only once the grid has a pick."""
    out = [
        Experiment("abg_grid", "abg_grid", f"target=auto,{SEEDS},{EPOCHS}"),
        Experiment("abg_grid_2ep", "abg_grid", f"target=auto,epochs=2,only={RANKING_CHECK}", main=False),
        Experiment("compound/paper", "compound", f"{SEEDS},{EPOCHS}"),
    ]
    if pick is not None:
        out.append(Experiment("compound/found", "compound", f"coefficients={pick},{SEEDS},{EPOCHS}"))
    out.append(Experiment("equal_flops", "equal_flops", f"{SEEDS},{EPOCHS}"))
    out += [Experiment(f"lines/{d}", d, f"doublings=4,{SEEDS},{EPOCHS}") for d in ("width", "depth", "resolution")]
    out.append(Experiment("fig4", "width_at_depth_resolution", f"{SEEDS},{EPOCHS}"))
    return out


def config_of(e: Experiment):
    """The sweep config of `e` (imported here: configs import the library)."""
    import importlib

    return importlib.import_module(f"configs.sweeps.{e.config}").get_config(e.arg)


def rows_of(e: Experiment) -> list[dict]:
    """The experiment's table rows, each with `sweep_dir`: its workdir under experiments/sweeps/."""
    from effscale import results, sweep

    rows = results.collect(e.workdir, sweep.pending_records(config_of(e))) if e.workdir.exists() else []
    return [{**r, "sweep_dir": e.name} for r in rows]


def grid_pick() -> str | None:
    """The grid's pick as A/B/G once every point of (a) is done; None before."""
    from effscale import report, results

    rows = rows_of(experiments(None)[0])
    if not rows or any(r["status"] != "done" for r in rows):
        return None
    best, _, _ = report.grid_winner(rows, results.accuracy_key(rows))
    return None if best is None else report.label(best)


# ----------------------------------------------------------------------------- a chunk


class Deadline:
    """When the chunk ends: `hours` from now, or at once when the runner itself gets SIGTERM / SIGINT
    (a scheduler's stop is passed on to the running sweep, which saves)."""

    def __init__(self, hours: float):
        self.at = time.monotonic() + 3600.0 * hours

    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def now(self, signum: int, frame: object) -> None:
        print(f"paper_method: {signal.Signals(signum).name}: stopping at once", flush=True)
        self.at = 0.0


class CommitFailed(RuntimeError):
    """Committing the finished records failed poll after poll: the chunk stops rather than train on unsaved."""


def run_chunk(hours: float, commit: bool) -> int:
    """Trains the experiments in order until they are done or `hours` have passed; returns an exit code."""
    problem = commit_problem() if commit else None
    if problem:
        print(f"effscale: error: --commit: {problem}", file=sys.stderr)
        return 2
    deadline, started, code = Deadline(hours), time.time(), 0
    speed = machine_speed()
    print(f"paper_method: predicted the training time of {record_predictions(speed)} unfinished runs", flush=True)
    previous = {sig: signal.signal(sig, deadline.now) for sig in (signal.SIGTERM, signal.SIGINT)}
    ran: set[str] = set()
    try:
        while not deadline.passed():
            todo = [e for e in experiments(grid_pick()) if e.name not in ran]
            if not todo:
                break
            outcome = _train(todo[0], deadline, commit)
            ran.add(todo[0].name)
            code = max(code, 0 if outcome in (0, "stopped") else 1)  # a failed point does not stop the chunk
    except CommitFailed as e:
        print(f"effscale: error: {e}", file=sys.stderr)
        code = 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _log_chunk(started, commit, speed)
    return code


def _train(e: Experiment, deadline: Deadline, commit: bool) -> int | str:
    """One experiment's sweep through launch.py, stopped with SIGTERM (the point saves) at `deadline`."""
    command = [
        sys.executable,
        "launch.py",
        "--config",
        f"configs/sweeps/{e.config}.py:{e.arg}",
        f"--workdir={e.workdir}",
    ]
    print(f"paper_method: {e.name}: {' '.join(command[1:])}", flush=True)
    proc = subprocess.Popen(command, cwd=ROOT)
    stopped_at, failures = None, 0
    try:
        while proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=POLL_S)
            failures = _commit_or_count(commit, failures)
            if stopped_at is None and deadline.passed():
                print(f"paper_method: time is up: stopping {e.name} (the running point saves and resumes next chunk)")
                proc.send_signal(signal.SIGTERM)
                stopped_at = time.monotonic()
            elif stopped_at is not None and time.monotonic() - stopped_at > STOP_GRACE_S:
                proc.kill()  # its last complete checkpoint is what the next chunk resumes from
    finally:  # whatever ends the loop (an error here, a failing commit) stops the sweep, which saves
        if proc.poll() is None:
            stop_child(proc)
            stopped_at = stopped_at or time.monotonic()
    _commit_or_count(commit, 0)
    return "stopped" if stopped_at is not None else proc.returncode


def stop_child(proc: subprocess.Popen) -> None:
    """SIGTERM to the sweep (its running point saves), SIGKILL if it has not ended after STOP_GRACE_S."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _commit_or_count(commit: bool, failures: int) -> int:
    """Commits the finished records; returns the failures in a row, raising CommitFailed at COMMIT_TRIES."""
    if not commit:
        return 0
    problem = commit_records()
    if problem is None:
        return 0
    if failures + 1 >= COMMIT_TRIES:
        raise CommitFailed(
            f"committing the finished records failed {COMMIT_TRIES} times in a row ({problem}); they are on disk "
            "under experiments/sweeps/: fix git, commit them, and rerun the chunk"
        )
    return failures + 1


def commit_problem() -> str | None:
    """Why git cannot commit here (not a work tree, no identity), in words with the fix; None when it can."""
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT, capture_output=True, text=True)
    if inside.returncode or inside.stdout.strip() != "true":
        return f"{ROOT} is not a git work tree; run without --commit, or from a clone"
    ident = subprocess.run(["git", "var", "GIT_COMMITTER_IDENT"], cwd=ROOT, capture_output=True, text=True)
    if ident.returncode:
        return "git has no committer identity here; set `git config user.name` and `git config user.email`"
    return None


def record_files() -> list[Path]:
    """The files kept in git of every finished point under experiments/sweeps/ (see .gitignore)."""
    out = []
    for result in sorted(SWEEPS.glob("**/result.json")):
        for name in ("point.json", "fingerprint.json", "result.json", "metrics.jsonl"):
            if (result.parent / name).exists():
                out.append(result.parent / name)
    return out + [p for p in (SWEEPS / "chunks.jsonl", SWEEPS / PREDICTIONS) if p.exists()]


def commit_records() -> str | None:
    """Commits the finished points' records (only those paths; whatever else is staged stays staged).

    Returns why a commit failed (another git command holds the index, say), after reporting it: the
    next poll retries; None when the records are committed.
    """
    files = [str(p.relative_to(ROOT)) for p in record_files()]
    if not files:
        return None
    added = subprocess.run(["git", "add", "--", *files], cwd=ROOT, capture_output=True, text=True)
    staged = subprocess.run(["git", "diff", "--cached", "--quiet", "--", *files], cwd=ROOT).returncode
    if added.returncode == 0 and staged:
        done = sum(1 for _ in SWEEPS.glob("**/result.json"))
        message = f"experiments: sweep records as they land ({done} finished points)"
        added = subprocess.run(
            ["git", "commit", "-q", "-m", message, "--", *files], cwd=ROOT, capture_output=True, text=True
        )
    if not added.returncode:
        return None
    problem = ((added.stderr or "").strip().splitlines() or [f"git exit status {added.returncode}"])[0]
    print(f"paper_method: commit deferred to the next poll: {problem}", flush=True)
    return problem


def _log_chunk(started: float, commit: bool, speed: float | None) -> None:
    """Appends the chunk's wall time and machine (its `machine_speed`) to experiments/sweeps/chunks.jsonl
    (the machine-hours)."""
    import json
    import os
    import platform

    entry = {
        "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "hours": round((time.time() - started) / 3600.0, 3),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "speed": None if speed is None else round(speed, 3),
        "finished_points": sum(1 for _ in SWEEPS.glob("**/result.json")),
    }
    SWEEPS.mkdir(parents=True, exist_ok=True)
    with open(SWEEPS / "chunks.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")
    if commit:
        commit_records()


# ----------------------------------------------------------------------------- status and outputs


def finished_rows(exps: list[Experiment]) -> list[dict]:
    """The table rows of the experiments' finished runs."""
    return [r for e in exps for r in rows_of(e) if r["status"] == "done"]


def cost_rows(own: list[dict]) -> list[dict]:
    """The rows the cost model is fitted on: the own finished runs, with the reproduction's timings while
    the own ones span too few MACs (reproduction_timings)."""
    return own + reproduction_timings(own)


def probe() -> dict | None:
    """B0, the sweeps' base network, trained PROBE_STEPS steps in a scratch workdir on this machine now:
    its table row, None where the run failed."""
    import tempfile

    from effscale import results

    with tempfile.TemporaryDirectory(prefix="effscale-probe-") as workdir:
        command = [sys.executable, "launch.py", "--config", "configs/sweeps/base.py", f"--workdir={workdir}"]
        done = subprocess.run([*command, *PROBE_FLAGS], cwd=ROOT, capture_output=True, text=True)
        row = results.point_row(workdir)
    if done.returncode != 0 or row["status"] != "done":
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"paper_method: the machine probe failed (exit status {done.returncode}: {last})", flush=True)
        return None
    return row


def machine_speed() -> float | None:
    """This machine's costmodel.machine_speed: a B0 `probe` against the cost model the predictions use
    (fitted on `cost_rows`); None (predict for a usual machine) where either is missing."""
    from effscale import costmodel

    row = probe()
    speed = costmodel.machine_speed(cost_rows(finished_rows(experiments(grid_pick()))), row) if row else None
    if speed is not None:
        print(
            f"paper_method: this machine trains B0 at {row['train_images_per_sec']:.0f} images/s, "
            f"{speed:.2f}x the time per image the cost model predicts for it: predictions are scaled by it",
            flush=True,
        )
    return speed


def forecast(speed: float | None = None) -> tuple[list[dict], list[tuple[Experiment, list[dict]]]]:
    """The finished runs' table rows, and per experiment its status rows with the cost model's columns (one
    model over every finished point of every experiment, on the device most of them ran on, its
    predictions times `speed`: costmodel.annotate)."""
    from effscale import costmodel, sweep

    exps = experiments(grid_pick())
    own = finished_rows(exps)
    finished = cost_rows(own)
    out = []
    for e in exps:
        cfg = config_of(e)
        expanded = sweep.expand(cfg)
        trains, datasets = [c.train for _, c in expanded], [str(c.data.name) for _, c in expanded]
        out.append((e, costmodel.annotate(sweep.status(cfg, e.workdir), finished, trains, datasets, speed)))
    return own, out


def plan() -> list[str]:
    """Per experiment: finished / declared runs and the predicted training hours left; how far off the
    predictions made before points ran (PREDICTIONS) turned out."""
    from effscale import costmodel

    own, annotated = forecast()
    lines, left = [], 0.0
    for e, rows in annotated:
        done = sum(r["state"] == "done" for r in rows)
        predicted = [r.get("predicted_s") for r in rows if r["state"] != "done"]
        known = sum(p for p in predicted if p)
        left += known
        if not predicted:
            guess = "none"
        elif not any(predicted):
            guess = f"no prediction yet (the cost model needs finished points of {costmodel.MIN_POINTS} networks)"
        else:
            guess = f"{known / 3600:.1f} h" + ("" if all(predicted) else " and more (some points unpredicted)")
        lines.append(f"{e.name:<18} {done:>3} of {len(rows):>3} runs finished; training left: {guess}")
    if grid_pick() is None:
        lines.append("compound/found     waits for the grid (a) to finish: its pick sets the coefficients")
    spent = sum(float(r.get("wall_time_s") or 0.0) for r in own)
    extra = costmodel.overhead(own)
    beyond = "" if extra is None else f" (plus ~{100 * extra:.0f}% for compilation and evaluation, as measured so far)"
    lines.append(f"finished runs' wall time {spent / 3600:.2f} h; predicted training left {left / 3600:.1f} h{beyond}")
    return lines + [prediction_summary(own), noise_summary(own)]


def record_predictions(speed: float | None = None) -> int:
    """Appends the cost model's prediction for every unfinished point to PREDICTIONS (made before they run,
    to be checked once they have), scaled by the machine's `speed`; returns how many."""
    import json

    _, annotated = forecast(speed)
    made = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lines = [
        json.dumps(
            {
                "made": made,
                "run": f"{e.name}/{r['point']}",
                "predicted_s": round(r["predicted_s"], 1),
                "predicted_wall_s": round(r["predicted_wall_s"], 1) if r.get("predicted_wall_s") else None,
                "basis": r.get("cost_basis"),
                "speed": None if speed is None else round(speed, 3),
                "state": r["state"],  # a point already partly trained is not checked against it
            }
        )
        for e, rows in annotated
        for r in rows
        if r["state"] != "done" and r.get("predicted_s")
    ]
    if lines:
        SWEEPS.mkdir(parents=True, exist_ok=True)
        with open(SWEEPS / PREDICTIONS, "a") as f:
            f.write("\n".join(lines) + "\n")
    return len(lines)


def prediction_errors(own: list[dict], field: str = "predicted_s") -> dict[str, float]:
    """Per run finished after a prediction of it: (predicted - measured) / measured, from the latest
    prediction made before it started. `field`: 'predicted_s' checks training seconds (the run's
    images at its measured images per second), 'predicted_wall_s' its wall time."""
    import json

    from effscale import costmodel

    measure = costmodel.training_seconds if field == "predicted_s" else lambda r: r.get("wall_time_s")
    path = SWEEPS / PREDICTIONS
    made = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    made = [m for m in made if m.get("state") == "pending" and m.get(field)]
    latest = {m["run"]: float(m[field]) for m in sorted(made, key=lambda m: m["made"])}
    out = {}
    for r in own:
        run = f"{r.get('sweep_dir')}/{r['point']}"
        if run in latest and (measured := measure(r)):
            out[run] = latest[run] / float(measured) - 1.0
    return out


def prediction_summary(own: list[dict]) -> str:
    """One line: the median and the range of the errors of predictions made before the runs (training
    time; wall time where it was predicted too)."""
    import statistics

    def spread(errors: list[float]) -> str:
        return (
            f"median error {100 * statistics.median(errors):+.0f}% "
            f"(from {100 * min(errors):+.0f}% to {100 * max(errors):+.0f}%)"
        )

    errors = list(prediction_errors(own).values())
    if not errors:
        return "predictions made before points ran: none checked yet (each chunk records them as it starts)"
    text = f"predictions made before points ran, checked on {len(errors)}: {spread(errors)}"
    walls = list(prediction_errors(own, "predicted_wall_s").values())
    return text + (f"; wall time, checked on {len(walls)}: {spread(walls)}" if walls else "")


def noise_summary(own: list[dict]) -> str:
    """One line: how far the runs of one network lie from their network's median time per image (the
    floor under any prediction's error), and the leave-one-network-out error of the cost model."""
    import statistics

    from effscale import costmodel

    by_device = costmodel.samples(own)
    spread = [x for pts in by_device.values() for x in costmodel.repeat_spread(pts)]
    if not spread:
        return "timing noise: no network has run twice yet"
    loo = [e for device, pts in by_device.items() for e in costmodel.leave_one_out(device, pts).values()]
    text = (
        f"timing noise: {len(spread)} runs of repeated networks lie {100 * min(spread):+.0f}% to "
        f"{100 * max(spread):+.0f}% from their network's median time per image "
        f"(median |deviation| {100 * statistics.median(abs(x) for x in spread):.0f}%)"
    )
    if loo:
        error = statistics.median(abs(e) for e in loo)
        text += f"; the cost model fitted on them, each network left out: median |error| {100 * error:.0f}%"
    return text


def reproduction_timings(finished: list[dict]) -> list[dict]:
    """The committed reproduction's nine points (8.5M to 56M MACs) as cost-model samples.

    A grid solved to equal MACs cannot tell the MACs coefficient from the constant; these points,
    measured on this project's 2-core CPU before records named their device (README, "What the
    sweeps show here"), span a range of MACs. Used only until the experiments' own points span
    OWN_SPAN in MACs (then their own times, taken with today's code, fit better), and only while
    they all ran on one CPU device and every chunk so far (experiments/sweeps/chunks.jsonl) on a
    machine with as many cores: a CPU of another size would be fitted with another machine's times.
    """
    import json

    macs = [float(r["macs"]) for r in finished if r.get("macs")]
    if macs and max(macs) >= OWN_SPAN * min(macs):
        return []
    kinds = {(r.get("device_kind"), r.get("device_count")) for r in finished}
    table = RESULTS.parent / "scaling.jsonl"
    chunks = SWEEPS / "chunks.jsonl"
    cores = {json.loads(line).get("cpus") for line in chunks.read_text().splitlines()} if chunks.exists() else set()
    if kinds != {("cpu", 1)} or cores != {REPRODUCTION_CPUS} or not table.exists():
        return []
    rows = [json.loads(line) for line in table.read_text().splitlines() if line.strip()]
    return [{**r, "device_kind": "cpu", "device_count": 1} for r in rows if r.get("status") == "done"]


def write_outputs(out) -> list:
    """The table, grouped table, figures and claims report of (a)-(d), and the 1-vs-2-epoch ranking."""
    from effscale import plots, record, report, results

    exps = experiments(grid_pick())
    rows = [r for e in exps if e.main for r in rows_of(e)]
    written = list(results.write_table(rows, out / "table"))
    written.append(results.write_grouped(rows, out / "grouped.csv"))
    written.append(report.write(rows, out / "report.md", "experiments (a)-(d) in experiments/sweeps")[0])
    written += plots.plot_all(rows, out / "figures")
    ranking = out / "ranking_1_vs_2_epochs.md"
    record.write_text(ranking, ranking_check(rows_of(exps[0]), rows_of(exps[1])))
    return [*written, ranking]


def ranking_check(one_epoch: list[dict], two_epochs: list[dict]) -> str:
    """Seed 0 of the checked candidates at 1 and 2 epochs: validation top-1 (EMA weights, as the grid
    chooses, where every run has it) and rank at each."""
    a = {r["network"] or r["point"]: r for r in one_epoch if r["status"] == "done" and not r.get("seed")}
    b = {r["network"] or r["point"]: r for r in two_epochs if r["status"] == "done"}
    runs = [*a.values(), *b.values()]
    key = "val_top1_ema" if runs and all(r.get("val_top1_ema") is not None for r in runs) else "val_top1"
    both = [n for n in b if n in a and a[n].get(key) is not None and b[n].get(key) is not None]
    if len(both) < 2:
        return "# Ranking at 1 and 2 epochs\n\nNot enough finished points yet (needs two candidates at both).\n"
    rank1 = sorted(both, key=lambda n: -a[n][key])
    rank2 = sorted(both, key=lambda n: -b[n][key])
    out = [f"# Ranking at 1 and 2 epochs (seed 0, validation top-1: `{key}`)", "",
           "| candidate | 1 epoch | rank | 2 epochs | rank |", "|---|---|---|---|---|"]  # fmt: skip
    for n in rank1:
        out.append(
            f"| {n} | {100 * a[n][key]:.2f} | {rank1.index(n) + 1} | {100 * b[n][key]:.2f} | {rank2.index(n) + 1} |"
        )
    verdict = "holds" if rank1 == rank2 else "changes"
    out += ["", f"The order {verdict} from 1 to 2 epochs over these {len(both)} candidates (one seed each)."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=2.5, help="train for at most this long (default 2.5)")
    ap.add_argument("--commit", action="store_true", help="git-commit each finished point's records as it lands")
    ap.add_argument("--status", action="store_true", help="print what is done and the predicted hours left")
    ap.add_argument("--no-train", action="store_true", help="only write the tables, figures and report")
    ap.add_argument("--out", default=str(RESULTS), help=f"where --no-train writes, local or gs:// (default {RESULTS})")
    args = ap.parse_args(argv)
    if not math.isfinite(args.hours) or args.hours <= 0:
        print(f"effscale: error: --hours={args.hours}: allowed: a positive number of hours.", file=sys.stderr)
        return 2
    if args.status:
        print("\n".join(plan()))
        return 0
    if args.no_train:
        from effscale import storage

        try:
            out = storage.path(args.out, "--out")
        except ValueError as e:
            print(f"effscale: error: {e}", file=sys.stderr)
            return 2
        for path in write_outputs(out):
            print(path)
        return 0
    return run_chunk(args.hours, args.commit)


if __name__ == "__main__":
    sys.exit(main())
