"""Training time from a network's counts: seconds per training image = k1 * MACs + k2 * activations + c.

Multiply-adds alone do not predict speed (see the time_vs_macs figure): memory traffic, which
grows with the activations, and a fixed cost per image (input pipeline, small kernels) matter
too. The three coefficients are fitted by least squares on a sweep's finished points, from their
measured train_images_per_sec (or step_time_s / batch_size), one fit per device: the device kind,
with the device count when above 1 (eight chips train eight times the images of one). Each
network is one sample, the median time of its runs (seeds, repeats): a run slowed by something
else on its machine then moves the fit only when most runs of its network were, and a network
run three times does not weigh three times. A fit needs MIN_POINTS networks; its error on a run
is measured leaving out the run's network (refit without every seed of it, predict it: a repeat
of the same network would flatter the fit), which needs MIN_POINTS other networks.

`--mode=status` uses it to predict each unfinished point's training time: the images it will
train (train.num_steps x batch size, else epochs x the dataset's training examples, as the
finished points measured them) times the predicted seconds per image. Its wall time adds what
compilation and evaluation cost the finished points: their median share of wall time beyond
training (`overhead`). A chunk of experiments/paper_method.py first times a short run of B0 and
scales its predictions by that machine's `machine_speed`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MIN_POINTS = 3  # networks: three coefficients

Row = Mapping[str, Any]


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def device_of(row: Row) -> str | None:
    """The device a row was measured on: its device kind, 'KIND xN' for N devices (N > 1)."""
    kind = row.get("device_kind")
    if not kind:
        return None
    count = _num(row.get("device_count"))
    return f"{kind} x{int(count)}" if count and count > 1 else str(kind)


def seconds_per_image(row: Row) -> float | None:
    """Measured training seconds per image: 1 / train_images_per_sec, else step time / batch size."""
    ips = _num(row.get("train_images_per_sec"))
    if ips and ips > 0:
        return 1.0 / ips
    step, batch = _num(row.get("train_step_time_s")), _num(row.get("batch_size"))
    return step / batch if step and batch and step > 0 and batch > 0 else None


@dataclasses.dataclass(frozen=True)
class Sample:
    """One finished point: its counts and measured seconds per image."""

    point: str
    network: str  # every seed of a network shares it
    macs: float
    activations: float
    seconds: float


@dataclasses.dataclass(frozen=True)
class CostFit:
    """seconds per image = k1 * MACs + k2 * activations + c on `device`, from `n` networks."""

    device: str
    k1: float
    k2: float
    c: float
    n: int

    def seconds_per_image(self, macs: float, activations: float) -> float | None:
        """The predicted seconds per image; None where the fit predicts no positive time."""
        value = self.k1 * macs + self.k2 * activations + self.c
        return value if value > 0 else None


def samples(rows: Sequence[Row]) -> dict[str, list[Sample]]:
    """Finished rows with counts and a measured time, by device (device_of)."""
    out: dict[str, list[Sample]] = {}
    for r in rows:
        macs, acts, secs, device = _num(r.get("macs")), _num(r.get("activations")), seconds_per_image(r), device_of(r)
        if r.get("status") == "done" and macs and acts and secs and device:
            network = str(r.get("network") or r.get("point"))
            out.setdefault(device, []).append(Sample(str(r.get("point")), network, macs, acts, secs))
    return out


def _by_network(points: Sequence[Sample]) -> list[list[Sample]]:
    """The runs of each network, in the order the networks first appear."""
    runs: dict[str, list[Sample]] = {}
    for p in points:
        runs.setdefault(p.network, []).append(p)
    return list(runs.values())


def per_network(points: Sequence[Sample]) -> list[Sample]:
    """One sample per network: its first run's counts and the median seconds of its runs."""
    return [dataclasses.replace(r[0], seconds=float(np.median([p.seconds for p in r]))) for r in _by_network(points)]


def fit_samples(device: str, points: Sequence[Sample]) -> CostFit | None:
    """Least squares of seconds on (MACs, activations, 1) over the networks' medians (`per_network`);
    None with fewer than MIN_POINTS networks."""
    networks = per_network(points)
    if len(networks) < MIN_POINTS:
        return None
    x = np.array([[p.macs, p.activations, 1.0] for p in networks])
    y = np.array([p.seconds for p in networks])
    scale = np.abs(x).max(axis=0)  # MACs ~1e7, activations ~1e6, 1: columns of one size condition the solve
    coef, *_ = np.linalg.lstsq(x / scale, y, rcond=None)
    k1, k2, c = (coef / scale).tolist()
    return CostFit(device, k1, k2, c, len(networks))


def fit(rows: Sequence[Row]) -> dict[str, CostFit]:
    """One CostFit per device with finished points of at least MIN_POINTS networks."""
    fits = {device: fit_samples(device, pts) for device, pts in samples(rows).items()}
    return {device: f for device, f in fits.items() if f is not None}


def leave_one_out(device: str, points: Sequence[Sample]) -> dict[str, float]:
    """Per point: (predicted - measured) / measured seconds per image, the prediction fitted without its
    network (every seed of it: an unfinished network has none measured).

    Empty where no network leaves MIN_POINTS other networks to refit on.
    """
    out = {}
    for p in points:
        rest = fit_samples(device, [q for q in points if q.network != p.network])
        predicted = rest.seconds_per_image(p.macs, p.activations) if rest else None
        if predicted is not None:
            out[p.point] = (predicted - p.seconds) / p.seconds
    return out


def repeat_spread(points: Sequence[Sample]) -> list[float]:
    """Per run of a network measured more than once: its seconds per image over its network's median,
    minus 1. What the same network's runs disagree by is what no model of the counts can predict."""
    spread = []
    for runs in _by_network(points):
        median = float(np.median([p.seconds for p in runs]))
        spread += [p.seconds / median - 1.0 for p in runs] if len(runs) > 1 else []
    return spread


def machine_speed(rows: Sequence[Row], probe: Row) -> float | None:
    """How much slower than the fit this machine trains: a probe run's measured seconds per image over
    what the fit on `rows` predicts for its network on its device kind. None where either is missing.

    Machines of one device kind differ (2-core VMs have trained the same network 2x apart) and a fit
    pools whichever machines its runs had: its predictions times this factor are for this machine.
    Taken against the fit rather than against earlier runs of the probe's network, the factor also
    corrects the fit's own error near the probe, which earlier chunks' predictions showed to be large.
    """
    mine, device = seconds_per_image(probe), device_of(probe)
    model = fit(rows).get(device) if device else None
    macs, acts = _num(probe.get("macs")), _num(probe.get("activations"))
    usual = model.seconds_per_image(macs, acts) if model and macs and acts else None
    return mine / usual if mine and usual else None


def training_seconds(row: Row) -> float | None:
    """A finished run's measured training seconds: the images it trained (steps x batch size) at its
    measured seconds per image."""
    per_image, steps, batch = seconds_per_image(row), _num(row.get("steps")), _num(row.get("batch_size"))
    return per_image * steps * batch if per_image and steps and batch else None


def overhead(rows: Sequence[Row]) -> float | None:
    """The median share of a finished run's wall time beyond its training steps (compilation,
    evaluation, checkpoints), at least 0; None where no finished row has both times."""
    shares = [
        wall / train - 1.0
        for r in rows
        if r.get("status") == "done" and (wall := _num(r.get("wall_time_s"))) and (train := training_seconds(r))
    ]
    return max(0.0, float(np.median(shares))) if shares else None


def train_examples(rows: Sequence[Row]) -> dict[str, int]:
    """Training examples per dataset as finished runs saw them: steps_per_epoch x batch_size (the largest)."""
    out: dict[str, int] = {}
    for r in rows:
        spe, batch, dataset = _num(r.get("steps_per_epoch")), _num(r.get("batch_size")), r.get("dataset")
        if r.get("status") == "done" and spe and batch and dataset:
            out[str(dataset)] = max(out.get(str(dataset), 0), int(spe * batch))
    return out


def images(train: Any, examples: int | None) -> float | None:
    """Images a run of `train` (a config's train block) trains: num_steps x batch, else epochs x examples."""
    steps, batch, epochs = _num(train.get("num_steps")), _num(train.get("batch_size")), _num(train.get("num_epochs"))
    if steps and batch:
        return steps * batch
    return epochs * examples if epochs and examples else None


def annotate(
    status_rows: Sequence[Row],
    finished: Sequence[Row],
    trains: Sequence[Any],
    datasets: Sequence[str],
    speed: float | None = None,
) -> list[dict[str, Any]]:
    """`status_rows` with the cost model's columns: 'predicted_s' (an unfinished point's training time),
    'predicted_wall_s' (that plus the finished points' `overhead`, where measured), 'cost_error' (a
    finished point's leave-one-network-out error) and 'cost_basis' (the device and network count of
    the fit used, on unfinished rows). `finished`: the sweep's table rows (results.point_row);
    `trains`, `datasets`: each status row's train config block and dataset name; `speed`: the
    machine's `machine_speed`, which scales every prediction (None: a machine as fast as the fit's).
    """
    by_device = samples(finished)
    fits = {d: f for d, pts in by_device.items() if (f := fit_samples(d, pts)) is not None}
    errors = {name: e for d, pts in by_device.items() for name, e in leave_one_out(d, pts).items()}
    examples = train_examples(finished)
    extra = overhead(finished)
    # Unfinished points run on the device most of the finished ones ran on.
    device = max(fits, key=lambda d: (fits[d].n, d), default=None)
    out = []
    for row, train, dataset in zip(status_rows, trains, datasets, strict=True):
        row = dict(row)
        if row.get("state") == "done":
            row["cost_error"] = errors.get(str(row.get("point")))
        elif device is not None:
            secs = fits[device].seconds_per_image(_num(row.get("macs")) or 0.0, _num(row.get("activations")) or 0.0)
            n_images = images(train, examples.get(dataset))
            row["predicted_s"] = secs * n_images * (speed or 1.0) if secs and n_images else None
            if row["predicted_s"] is not None and extra is not None:
                row["predicted_wall_s"] = row["predicted_s"] * (1.0 + extra)
                row["cost_overhead"] = extra
            row["cost_basis"] = f"{device}, {fits[device].n} networks" + (f", machine x{speed:.2f}" if speed else "")
        out.append(row)
    return out


def duration(seconds: float | None) -> str:
    """Seconds as people read them: 45 s, 12 min, 3.4 h; '-' for None."""
    if seconds is None:
        return "-"
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
