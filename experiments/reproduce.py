"""Regenerates the committed reproduction of the paper's findings: runs, table and figures in one command.

    python experiments/reproduce.py                       # ~1 hour on a 2-core CPU; resumes if interrupted
    python experiments/reproduce.py --arg epochs=2        # any argument of configs/sweeps/reproduce.py

Runs every point of configs/sweeps/reproduce.py in WORKDIR (default sweeps/reproduce; finished
points are skipped, an interrupted one resumes), then writes the collected table to
experiments/results/scaling.csv and .jsonl (what experiments/scaling.ipynb reads by default) and
every figure to experiments/results/figures/ (PNG and SVG). With --no-train it only collects and
plots what the workdir holds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from configs.sweeps import reproduce
from effscale import host, plots, results, sweep

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "experiments" / "results"


def main(argv: list[str] | None = None) -> int:
    """Trains (unless --no-train), collects and plots; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=str(ROOT / "sweeps" / "reproduce"), help="the sweep's workdir")
    ap.add_argument("--arg", default=None, help="argument of configs/sweeps/reproduce.py, e.g. epochs=2")
    ap.add_argument("--no-train", action="store_true", help="only collect and plot what the workdir holds")
    ap.add_argument("--out", default=str(RESULTS), help="where the table and figures go")
    args = ap.parse_args(argv)
    config = reproduce.get_config(args.arg)
    code = 0 if args.no_train else sweep.main(config, args.workdir, "train")
    rows = results.collect(args.workdir, sweep.pending_records(config))
    out = Path(args.out)
    csv_path, jsonl_path = results.write_table(rows, out / "scaling")
    written = plots.plot_all(rows, out / "figures")
    done = sum(r["status"] == "done" for r in rows)
    print(f"{len(rows)} points ({done} done) -> {csv_path}, {jsonl_path}; {len(written)} figure files in {out}/figures")
    return code


if __name__ == "__main__":
    host.configure_process()  # as launch.py runs the trainer
    sys.exit(main())
