"""Figures of a results table: accuracy against compute, one line per scaling strategy.

Every function takes rows (dicts, as from `results.collect` / `results.read_table`) and
returns a `matplotlib.figure.Figure` built without pyplot (no global figure state, any
backend: files here, inline in a notebook). `plot_all` writes every figure the rows support
as PNG and SVG. Accuracies in the table are fractions; the figures show them in percent.
Repeated runs of one network (rows with the same sweep and network, e.g. several seeds) are drawn
as their mean with error bars of the mean's 95% t interval (effscale.stats) on every figure; a
network with one run has no interval and no error bar.

- `top1_vs(rows, 'macs')`: top-1 against multiply-adds (log x), one line per series, with the
  fitted saturating curve (solid over the data, dashed where extrapolated). Figure 3 as an
  overlay; on a width_at_depth_resolution sweep, Figure 4's four lines.
- `panels(rows)`: one panel per strategy, shared top-1 axis (Figure 3's three panels).
- `equal_flops(rows)`: top-1 per strategy at each multiply-add budget (Table 7).
- `pareto(rows)`: every point and the frontier of the best top-1 for its cost.
- `top1_vs(rows, 'params')`, `top1_vs(rows, 'train_time')`: the same against parameters and
  against measured training time per image.
- `time_vs_macs(rows)`: measured time per training image against multiply-adds: FLOPs do not
  predict speed (depthwise-heavy, high-resolution networks are slow per multiply-add).
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from effscale import fit as fitting
from effscale import results, stats, storage
from effscale.units import si

Row = Mapping[str, Any]

# One colour per strategy across every figure; other series take the cycle's colours.
STRATEGY_COLORS = {
    "width": "#1f77b4",
    "depth": "#ff7f0e",
    "resolution": "#2ca02c",
    "compound": "#d62728",
    "abg": "#9467bd",
}
_CYCLE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")

# x-axis choices of `top1_vs`: label and how to read the value from a row.
X_AXES: dict[str, tuple[str, Callable[[Row], float | None]]] = {
    "macs": ("multiply-adds per image", lambda r: r.get("macs")),
    "params": ("parameters", lambda r: r.get("params")),
    "train_time": (
        "measured training time per image (s)",
        lambda r: 1.0 / r["train_images_per_sec"] if r.get("train_images_per_sec") else None,
    ),
}
EXTRAPOLATE = 4.0  # fitted curves continue to this multiple of the largest x, dashed
PERCENT = 100.0  # table accuracies are fractions


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def accuracy_key(rows: Sequence[Row]) -> str:
    """The accuracy column to plot: EMA top-1 when every finished row has it, else final top-1."""
    return results.accuracy_key(rows)


def finished(rows: Sequence[Row], key: str | None = None) -> list[Row]:
    """Done rows that have an accuracy and MACs."""
    key = key or accuracy_key(rows)
    return [r for r in rows if r.get("status") == "done" and _num(r.get(key)) is not None and _num(r.get("macs"))]


BASE = "base"  # the strategy of a sweep's shared unscaled point: the origin of every line


def _grouped(rows: Sequence[Row], name_of: Callable[[Row], str]) -> dict[str, list[Row]]:
    """Rows by `name_of`, in first-seen order; rows of strategy 'base' start every group (alone: one group)."""
    base = [r for r in rows if r.get("strategy") == BASE]
    out: dict[str, list[Row]] = {}
    for r in rows:
        if r.get("strategy") != BASE:
            out.setdefault(name_of(r), []).append(r)
    if not out:
        return {BASE: base} if base else {}
    return {name: base + group for name, group in out.items()}


def series_of(rows: Sequence[Row]) -> dict[str, list[Row]]:
    """Rows by series (default: strategy), series in first-seen order; a 'base' point joins every series."""
    return _grouped(rows, lambda r: str(r.get("series") or r.get("strategy") or "?"))


@dataclasses.dataclass(frozen=True)
class Mean:
    """One point of a figure: the mean x and y of a network's runs, their spread and the mean's interval."""

    x: float
    top1: float  # the mean y (top-1 in percent unless `point_means` was given another y)
    std: float  # sample standard deviation over the runs; 0 for a single run
    runs: int
    row: Row  # the first run's row (for labels)
    ci: float = 0.0  # half-width of the mean's 95% t interval; 0 for a single run (no interval)

    @property
    def err(self) -> float | None:
        """The error bar: the interval's half-width where there are 2 runs or more, else None."""
        return self.ci if self.runs > 1 else None


def point_means(
    rows: Sequence[Row],
    x_of: Callable[[Row], float | None],
    key: str,
    y_of: Callable[[Row], float | None] | None = None,
) -> list[Mean]:
    """The rows with an x and a y, one `Mean` per network (results.network_key), in order of x.

    y is the accuracy `key` in percent unless `y_of` reads another value.
    """
    y_of = y_of or (lambda r: None if _num(r.get(key)) is None else PERCENT * _num(r.get(key)))
    groups: dict[Any, list[tuple[float, float, Row]]] = {}
    for k, r in enumerate(rows):
        x, y = _num(x_of(r)), _num(y_of(r))
        if x and y is not None:
            groups.setdefault(results.network_key(r, k), []).append((x, y, r))
    means = []
    for runs in groups.values():
        xs = np.array([v[0] for v in runs])
        summary = stats.summarize([v[1] for v in runs])
        std, ci = summary.std or 0.0, summary.half_width or 0.0
        means.append(Mean(float(xs.mean()), float(summary.mean), std, len(runs), runs[0][2], ci))
    return sorted(means, key=lambda m: (m.x, m.top1))


def _yerr(means: Sequence[Mean]) -> list[float] | None:
    """Error bars of `means` (0 where a point has one run), or None when no point has two runs."""
    return [m.ci for m in means] if any(m.runs > 1 for m in means) else None


def _color(name: str, k: int) -> str:
    """The strategy's own colour, else the k-th of the cycle."""
    return STRATEGY_COLORS.get(name, _CYCLE[k % len(_CYCLE)])


def _line(
    ax: Axes,
    rows: Sequence[Row],
    x_of: Callable[[Row], float | None],
    key: str,
    label: str,
    color: str,
    x_max: float | None,
    with_fit: bool = True,
) -> tuple[list[Mean], fitting.Saturating | None]:
    """One series: points joined in x order (error bars over repeated runs), its fitted curve and extrapolation."""
    means = point_means(rows, x_of, key)
    if not means:
        return means, None
    xs, ys = np.array([m.x for m in means]), np.array([m.top1 for m in means])
    curve = fitting.fit_saturating(xs, ys, a_max=PERCENT) if with_fit else None
    if curve is not None:
        # Three points fix three parameters exactly: the ceiling means little then.
        label += f"  (fit: -> {curve.a:.1f})" if _ceiling_known(curve) else "  (fit)"
    style = dict(color=color, label=label, lw=1.2, ms=4, alpha=0.9 if curve is None else 0.6)
    if _yerr(means):
        ax.errorbar(xs, ys, yerr=_yerr(means), fmt="o-", capsize=3, **style)
    else:
        ax.plot(xs, ys, "o-", **style)
    if curve is not None:
        inside = np.geomspace(xs.min(), xs.max(), 60)
        ax.plot(inside, curve(inside), "-", color=color, lw=2)
        if x_max and x_max > xs.max():
            beyond = np.geomspace(xs.max(), x_max, 40)
            ax.plot(beyond, curve(beyond), "--", color=color, lw=1.5)
    return means, curve


def _ceiling_known(curve: fitting.Saturating | None) -> bool:
    """Whether the fit says where the curve saturates: more points than parameters, below 100%."""
    return curve is not None and curve.n > fitting.MIN_POINTS and curve.a < 99.9


def _log_x(ax: Axes) -> None:
    """Log x axis with short SI labels (3M, 10M) and no crowded minor labels."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: si(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def top1_vs(rows: Sequence[Row], x: str = "macs", title: str = "", fit: bool = True) -> Figure:
    """Top-1 against `x` ('macs', 'params' or 'train_time'), log x, one line per series."""
    xlabel, x_of = X_AXES[x]
    key = accuracy_key(rows)
    rows = finished(rows, key)
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    xs = [v for r in rows if (v := _num(x_of(r)))]
    x_max = max(xs) * EXTRAPOLATE if xs else None
    for k, (name, group) in enumerate(series_of(rows).items()):
        _line(ax, group, x_of, key, name, _color(name, k), x_max, fit)
    _decorate(ax, xlabel, key, title or f"top-1 against {xlabel}")
    return fig


def _decorate(ax: Axes, xlabel: str, key: str, title: str) -> None:
    _log_x(ax)
    ax.set_xlabel(xlabel + " (log scale)")
    ax.set_ylabel(("EMA " if key.startswith("ema") else "") + "top-1 accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")


def panels(rows: Sequence[Row], by: str = "strategy", title: str = "") -> Figure:
    """Top-1 against multiply-adds, one panel per `by` value (Figure 3's three panels), shared y."""
    key = accuracy_key(rows)
    rows = finished(rows, key)
    groups = _grouped(rows, lambda r: str(r.get(by) or "?"))
    n = max(1, len(groups))
    fig = Figure(figsize=(3.6 * n, 3.8), layout="constrained")
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    x_of = X_AXES["macs"][1]
    for k, (ax, (name, group)) in enumerate(zip(axes, groups.items(), strict=False)):
        x_max = max(_num(r["macs"]) for r in group) * EXTRAPOLATE
        means, curve = _line(ax, group, x_of, key, name, _color(name, k), x_max)
        for m in means:
            ax.annotate(
                _point_label(m.row, name),
                (m.x, m.top1),
                fontsize=6,
                textcoords="offset points",
                xytext=(3, -8),
            )
        ceiling = f": saturates near {curve.a:.1f}" if _ceiling_known(curve) else ""
        _decorate(ax, "multiply-adds", key, f"scale {name}{ceiling}")
        if k:
            ax.set_ylabel("")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _point_label(r: Row, strategy: str) -> str:
    """A short label of the scaled value: w=2.0, d=3, r=48, phi=2."""
    field = {"width": "width", "depth": "depth", "resolution": "resolution", "compound": "phi"}.get(strategy)
    v = _num(r.get(field)) if field else None
    if v is None:
        return ""
    short = {"width": "w", "depth": "d", "resolution": "r", "phi": "phi"}[field]
    return f"{short}={v:g}" if field != "resolution" else f"r={int(v)}"


def equal_flops(rows: Sequence[Row], title: str = "") -> Figure:
    """Top-1 per strategy at each multiply-add budget (rows with 'target_macs'), with achieved MACs."""
    key = accuracy_key(rows)
    rows = [r for r in finished(rows, key) if _num(r.get("target_macs"))]
    budgets = sorted({_num(r["target_macs"]) for r in rows})
    strategies = list(dict.fromkeys(str(r.get("strategy")) for r in rows))
    fig = Figure(figsize=(1.6 + 1.9 * max(1, len(budgets)), 4.2), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(strategies))
    spans = []  # each bar's top with its interval: the y range to show
    for k, s in enumerate(strategies):
        for j, budget in enumerate(budgets):
            match = [r for r in rows if r.get("strategy") == s and _num(r["target_macs"]) == budget]
            if not match:
                continue
            m = point_means(match, X_AXES["macs"][1], key)[0]
            xpos = j + (k - (len(strategies) - 1) / 2) * width
            ax.bar(xpos, m.top1, width * 0.95, yerr=m.err, capsize=3, color=_color(s, k), label=s if j == 0 else None)
            ax.annotate(f"{m.top1:.1f}\n{m.x / budget:.2f}x", (xpos, m.top1), ha="center", va="bottom", fontsize=6)
            spans += [m.top1 - (m.err or 0.0), m.top1 + (m.err or 0.0)]
    if spans:
        lo, hi = min(spans), max(spans)
        pad = max(1.0, (hi - lo) * 0.6)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xticks(range(len(budgets)), [f"{si(b)} MACs" for b in budgets])
    ax.set_ylabel(("EMA " if key.startswith("ema") else "") + "top-1 accuracy (%)")
    ax.set_title(title or "equal multiply-adds: which dimension to scale (label: top-1, achieved / budget)", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    if strategies:
        ax.legend(fontsize=7, loc="upper left")
    return fig


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, accuracy) points no other point beats on both (cheaper-or-equal and more accurate)."""
    front: list[tuple[float, float]] = []
    best = -math.inf
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((cost, acc))
            best = acc
    return front


def pareto(rows: Sequence[Row], x: str = "macs", title: str = "") -> Figure:
    """Every finished network by series (mean of its runs, 95% interval bars), and the frontier of best top-1."""
    xlabel, x_of = X_AXES[x]
    key = accuracy_key(rows)
    rows = finished(rows, key)
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    pts = []
    for k, (name, group) in enumerate(series_of(rows).items()):
        means = point_means(group, x_of, key)
        pts += [(m.x, m.top1, m.row.get("network") or m.row.get("point")) for m in means]
        if means:
            color = _color(name, k)
            ax.scatter([m.x for m in means], [m.top1 for m in means], s=18, color=color, label=name, alpha=0.8)
            _error_bars(ax, means, color)
    front = pareto_front([(c, a) for c, a, _ in pts])
    if front:
        ax.step(*zip(*front, strict=True), where="post", color="black", lw=1.2, label="Pareto frontier")
        names = {(c, a): n for c, a, n in pts}
        for c, a in front:
            ax.annotate(str(names.get((c, a), "")), (c, a), fontsize=6, textcoords="offset points", xytext=(3, 3))
    _decorate(ax, xlabel, key, title or "Pareto frontier: best top-1 for the cost")
    return fig


def _error_bars(ax: Axes, means: Sequence[Mean], color: str, horizontal: bool = False) -> None:
    """Interval bars (no markers) at the means that have two runs or more."""
    repeated = [m for m in means if m.runs > 1]
    if not repeated:
        return
    xs, ys, errs = [m.x for m in repeated], [m.top1 for m in repeated], [m.ci for m in repeated]
    if horizontal:
        ax.errorbar(ys, xs, xerr=errs, fmt="none", ecolor=color, capsize=3, lw=1)
    else:
        ax.errorbar(xs, ys, yerr=errs, fmt="none", ecolor=color, capsize=3, lw=1)


def _seconds_per_image(r: Row) -> float | None:
    ips = _num(r.get("train_images_per_sec"))
    return 1.0 / ips if ips else None


def time_vs_macs(rows: Sequence[Row], title: str = "") -> Figure:
    """Measured training time per image against multiply-adds (left), and time per multiply-add (right).

    Right: each network's seconds per multiply-add relative to the median network. If FLOPs
    predicted speed every point would sit on 1; depthwise convolutions, small feature maps and
    large activations cost time that multiply-adds do not count. Repeated runs: mean and 95% interval.
    """
    rows = [r for r in rows if r.get("status") == "done" and _num(r.get("macs")) and _seconds_per_image(r)]
    fig = Figure(figsize=(10.5, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    x_of = X_AXES["macs"][1]
    groups = {name: point_means(group, x_of, "", _seconds_per_image) for name, group in series_of(rows).items()}
    median = float(np.median([m.top1 / m.x for means in groups.values() for m in means])) if rows else 1.0
    for k, (name, means) in enumerate(groups.items()):
        macs, secs = np.array([m.x for m in means]), np.array([m.top1 for m in means])
        color = _color(name, k)
        left.plot(macs, secs, "o-", color=color, label=name, ms=4)
        right.plot(macs, secs / macs / median, "o-", color=color, label=name, ms=4)
        _error_bars(left, means, color)
        per_mac = [dataclasses.replace(m, top1=m.top1 / m.x / median, ci=m.ci / m.x / median) for m in means]
        _error_bars(right, per_mac, color)
    if rows:
        xs = np.geomspace(min(_num(r["macs"]) for r in rows), max(_num(r["macs"]) for r in rows), 10)
        left.plot(xs, median * xs, ":", color="gray", label="time proportional to multiply-adds")
        right.axhline(1.0, ls=":", color="gray")
    for ax in (left, right):
        _log_x(ax)
        ax.set_yscale("log")
        ax.set_xlabel("multiply-adds per image (log scale)")
        ax.grid(True, which="both", alpha=0.3)
    left.set_ylabel("measured training time per image (s)")
    right.set_ylabel("time per multiply-add, relative to the median point")
    if rows:
        left.legend(fontsize=7)
    fig.suptitle(title or "FLOPs do not predict speed", fontsize=11)
    return fig


def abg_ranking(rows: Sequence[Row], title: str = "") -> Figure:
    """Each (alpha, beta, gamma) candidate's accuracy on the column that chooses among them (validation
    top-1 where the records have it: `results.selection_key`; mean of its runs, 95% interval bars),
    best first, with MACs; candidates that solved to the same network share one bar."""
    shown = accuracy_key(rows)
    key = results.selection_key(rows, shown) or shown
    ranked = sorted(point_means(finished(rows, key), X_AXES["macs"][1], key), key=lambda m: -m.top1)
    groups = results.identical_groups(ranked, lambda m: m.row)
    means = [group[0] for group in groups]
    name = lambda m: str(m.row.get("network") or m.row.get("point", "")).removeprefix("abg-")  # noqa: E731
    labels = [" = ".join(name(m) for m in group) for group in groups]
    fig = Figure(figsize=(6.4, 1.2 + 0.28 * max(1, len(means))), layout="constrained")
    ax = fig.add_subplot()
    values = [m.top1 for m in means]
    ax.barh(range(len(means)), values, color=STRATEGY_COLORS["abg"])
    _error_bars(ax, [dataclasses.replace(m, x=k) for k, m in enumerate(means)], "black", horizontal=True)
    for k, m in enumerate(means):
        runs = f"  (n={m.runs})" if m.runs > 1 else ""
        ax.annotate(
            f"{values[k]:.2f}  {si(m.x)} MACs{runs}",
            (values[k] + (m.ci if m.runs > 1 else 0.0), k),
            fontsize=6,
            va="center",
            textcoords="offset points",
            xytext=(3, 0),
        )
    ax.set_yticks(range(len(means)), labels, fontsize=7)
    ax.invert_yaxis()
    if values:
        ax.set_xlim(min(values) - 1.0, max(v + m.ci for v, m in zip(values, means, strict=True)) + 1.5)
    weights = "EMA " if key.startswith(("ema", "val_top1_ema")) else ""
    split = "validation " if key != shown else ""
    ax.set_xlabel(f"{split}{weights}top-1 accuracy (%)" + (", which chooses" if split else ""))
    ax.set_title(title or "alpha / beta / gamma candidates at phi = 1", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def save(fig: Figure, directory: str | Path, name: str, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Writes `fig` as directory/name.<format> for each format; returns the paths.

    The same figure gives the same bytes (no date, clip ids salted by the name), so regenerating
    committed figures from unchanged records changes no file."""
    directory = storage.path(directory, "figures directory")
    paths = []
    for fmt in formats:
        path = directory / f"{name}.{fmt}"
        buf = io.BytesIO()
        with matplotlib.rc_context({"svg.hashsalt": name}):
            fig.savefig(buf, format=fmt, dpi=130 if fmt == "png" else None, metadata={"Date": None})
        storage.write_atomic(path, buf.getvalue())
        paths.append(path)
    return paths


def png_bytes(fig: Figure) -> bytes:
    """`fig` as PNG bytes (to show it in a notebook without pyplot)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def figures_for(rows: Sequence[Row], title: str = "", only: Collection[str] | None = None) -> dict[str, Figure]:
    """Every figure the rows of one sweep support, by file name (only those named in `only`, if given).

    Names: top1_vs_macs, top1_vs_macs_panels, equal_flops, ranking (alpha/beta/gamma sweeps),
    pareto, top1_vs_params, top1_vs_train_time, time_vs_macs.
    """
    key = accuracy_key(rows)
    done = finished(rows, key)
    if not done:
        return {}
    prefix = f"{title}: " if title else ""
    strategies = {r.get("strategy") for r in done} - {BASE}
    series = {r.get("series") or r.get("strategy") for r in done if r.get("strategy") != BASE}
    by = "strategy" if len(strategies) > 1 else "series"
    timed = any(_num(r.get("train_images_per_sec")) for r in done)
    # Figures are built lazily: each one costs real time on a small CPU.
    makers: dict[str, Callable[[], Figure]] = {}
    if strategies == {"abg"}:  # one phi, many coefficient triples: a ranking, not a curve
        targets = sorted({_num(r.get("target_macs")) for r in done} - {None})
        where = f"{' / '.join(si(t) for t in targets)} MACs" if targets else "phi = 1"
        makers["ranking"] = lambda: abg_ranking(rows, f"{prefix}candidates at {where}")
    else:
        makers["top1_vs_macs"] = lambda: top1_vs(rows, "macs", f"{prefix}top-1 against multiply-adds")
        if len(strategies) > 1 or len(series) > 1:
            makers["top1_vs_macs_panels"] = lambda: panels(rows, by=by, title=f"{prefix}one panel per {by}")
        if any(_num(r.get("target_macs")) for r in done):
            makers["equal_flops"] = lambda: equal_flops(rows, f"{prefix}top-1 at equal multiply-adds")
    makers["pareto"] = lambda: pareto(rows, "macs", f"{prefix}Pareto frontier")
    if strategies != {"abg"}:
        if all(_num(r.get("params")) for r in done):
            makers["top1_vs_params"] = lambda: top1_vs(rows, "params", f"{prefix}top-1 against parameters")
        if timed:
            makers["top1_vs_train_time"] = lambda: top1_vs(
                rows, "train_time", f"{prefix}top-1 against measured training time"
            )
            makers["time_vs_macs"] = lambda: time_vs_macs(rows, f"{prefix}FLOPs do not predict speed")
    return {name: make() for name, make in makers.items() if only is None or name in only}


def by_sweep(rows: Sequence[Row]) -> dict[str, list[Row]]:
    """Rows grouped by their sweep name (rows without one under 'results')."""
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(str(r.get("sweep") or "results"), []).append(r)
    return out


def plot_all(rows: Sequence[Row], directory: str | Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Writes every figure of every sweep in `rows` into `directory` as <sweep>_<figure>.<format>."""
    written: list[Path] = []
    groups = by_sweep(rows)
    for sweep, group in groups.items():
        for name, fig in figures_for(group, sweep).items():
            written += save(fig, directory, f"{sweep}_{name}", formats)
    if len(groups) > 1 and finished(rows):
        written += save(pareto(rows, "macs", "every sweep: Pareto frontier"), directory, "all_pareto", formats)
        single = overview_rows(rows)
        if len({r.get("strategy") for r in single}) > 1:
            title = "scaling one dimension vs compound (Figure 3)"
            written += save(top1_vs(single, "macs", title), directory, "all_top1_vs_macs", formats)
            written += save(panels(single, "strategy", title), directory, "all_top1_vs_macs_panels", formats)
    return written


def overview_rows(rows: Sequence[Row]) -> list[Row]:
    """Rows of the plain width / depth / resolution / compound curves (and a shared base point).

    Leaves out Figure 4's lines (their series is not their strategy), the alpha/beta/gamma
    candidates and points of an equal-FLOPs sweep (a budget, and no unscaled point to start a
    line from); a sweep that has a base point keeps its budget points on their strategy's line.
    """
    keep = ("width", "depth", "resolution", "compound", BASE)
    with_base = {r.get("sweep") for r in rows if r.get("strategy") == BASE}
    return [
        r
        for r in rows
        if r.get("strategy") in keep
        and (r.get("series") or r.get("strategy")) == r.get("strategy")
        and (not _num(r.get("target_macs")) or r.get("sweep") in with_base)
    ]
