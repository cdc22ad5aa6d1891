"""The saturating fit, what each figure draws, the files plot_all writes and the notebook."""

import statistics
from pathlib import Path

import numpy as np
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure

from effscale import fit, plots, results

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "experiments" / "fixtures" / "scaling.csv"


def row(point, strategy, macs, top1, ema=None, sweep="s", **extra):
    """A finished row of a results table (accuracies are fractions)."""
    return {
        "sweep": sweep,
        "point": point,
        "strategy": strategy,
        "series": extra.pop("series", strategy),
        "status": "done",
        "macs": macs,
        "params": macs // 4,
        "top1": top1,
        "ema_top1": ema,
        **extra,
    }


# Two strategies, points out of MACs order; an unfinished point and one without an accuracy are not drawn.
TABLE = [
    row("w3", "width", 9e6, 0.86, train_images_per_sec=100.0),
    row("w1", "width", 1e6, 0.80, train_images_per_sec=900.0),
    row("w2", "width", 3e6, 0.84, train_images_per_sec=300.0),
    row("d1", "depth", 2e6, 0.81, train_images_per_sec=400.0),
    row("d2", "depth", 5e6, 0.83, train_images_per_sec=150.0),
    {**row("d3", "depth", 8e6, 0.9), "status": "failed"},
    row("d4", "depth", 7e6, None),
]


def data_lines(ax):
    """The measured points of each series (marker 'o'), not the fitted curves (no marker)."""
    return [line for line in ax.get_lines() if line.get_marker() == "o"]


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_fit_recovers_a_saturating_curve_and_resists_an_outlier():
    macs = np.geomspace(1e6, 1e8, 8)
    truth = lambda m: 90.0 - 6.0 * (m / 1e6) ** -0.5  # noqa: E731
    curve = fit.fit_saturating(macs, truth(macs))
    assert curve.a == pytest.approx(90.0, abs=0.05) and curve.c == pytest.approx(0.5, rel=0.05)
    assert curve.rmse < 0.01 and curve.n == 8
    assert curve.macs_for(89.0) == pytest.approx(3.6e7, rel=0.05) and curve.macs_for(95.0) == float("inf")
    noisy = truth(macs)
    noisy[3] -= 5.0  # one diverged run
    robust = fit.fit_saturating(macs, noisy)
    assert robust.a == pytest.approx(90.0, abs=0.5)


def test_fit_handles_too_few_or_odd_points():
    assert fit.fit_saturating([1e6, 2e6], [80.0, 81.0]) is None
    assert fit.fit_saturating([1e6, 1e6, 1e6], [80.0, 81.0, 82.0]) is None
    assert fit.fit_saturating([1e6, 2e6, float("nan"), 4e6], [80.0, 81.0, 82.0, None]) is None
    three = fit.fit_saturating([1e6, 2e6, 4e6], [80.0, 81.0, 81.5])
    assert three is not None and three(2e6) == pytest.approx(81.0, abs=0.05)
    falling = fit.fit_saturating([1e6, 2e6, 4e6, 8e6], [82.0, 81.0, 80.0, 79.0])
    assert falling.b == 0.0  # never a curve that falls with compute
    capped = fit.fit_saturating([1e6, 2e6, 4e6, 8e6], [60.0, 70.0, 80.0, 90.0], a_max=100.0)
    assert capped.a <= 100.0


def test_pareto_front():
    pts = [(1, 80.0), (2, 79.0), (2, 82.0), (3, 81.0), (4, 85.0), (4, 84.0)]
    assert plots.pareto_front(pts) == [(1, 80.0), (2, 82.0), (4, 85.0)]
    assert plots.pareto_front([]) == []


# ----------------------------------------------------------------------------- what is drawn


def test_top1_vs_macs_draws_the_table_points_on_a_log_axis():
    fig = plots.top1_vs(TABLE, "macs", "a title")
    (ax,) = fig.axes
    width, depth = data_lines(ax)
    assert list(width.get_xdata()) == [1e6, 3e6, 9e6]
    assert list(width.get_ydata()) == pytest.approx([80.0, 84.0, 86.0])  # fractions shown in percent
    assert list(depth.get_xdata()) == [2e6, 5e6] and list(depth.get_ydata()) == pytest.approx([81.0, 83.0])
    assert ax.get_xscale() == "log" and ax.get_yscale() == "linear"
    assert ax.get_xlabel() == "multiply-adds per image (log scale)" and ax.get_ylabel() == "top-1 accuracy (%)"
    assert ax.get_title() == "a title"
    assert legend_texts(ax) == ["width  (fit)", "depth"]  # three points fit a curve, two do not
    fitted = [line for line in ax.get_lines() if line.get_marker() in ("None", "", None)]
    assert fitted and all(line.get_color() == width.get_color() for line in fitted)
    assert not ax.containers  # one run per point: no error bars


def test_the_ema_accuracy_is_drawn_when_every_row_has_it():
    rows = [row("a", "width", 1e6, 0.70, ema=0.75), row("b", "width", 2e6, 0.72, ema=0.78)]
    (ax,) = plots.top1_vs(rows, "params").axes
    (line,) = data_lines(ax)
    assert list(line.get_xdata()) == [2.5e5, 5e5] and list(line.get_ydata()) == pytest.approx([75.0, 78.0])
    assert ax.get_ylabel() == "EMA top-1 accuracy (%)" and ax.get_xlabel() == "parameters (log scale)"
    assert ax.get_xscale() == "log"


# t(0.975, n - 1): the 95% interval of a mean of n runs is mean +- T95[n] * std / sqrt(n).
T95 = {2: 12.706205, 3: 4.302653}


def half_width(runs):
    """The 95% interval's half-width of the mean of `runs` (in percent), by hand."""
    return T95[len(runs)] * 100 * statistics.stdev(runs) / len(runs) ** 0.5 if len(runs) > 1 else 0.0


def seeded(network, strategy, macs, runs, **extra):
    """One row per run of `network`, named as a sweep with seeds names them (seed 0 keeps the name)."""
    return [
        row(network if k == 0 else f"{network}_s{k}", strategy, macs, top1, network=network, seed=k, **extra)
        for k, top1 in enumerate(runs)
    ]


def test_repeated_runs_are_drawn_as_mean_and_95_percent_interval():
    seeds = {"w1": [0.80, 0.82, 0.84], "w2": [0.85, 0.86], "w3": [0.88]}
    macs = {"w1": 1e6, "w2": 2e6, "w3": 4e6}
    rows = [r for p, runs in seeds.items() for r in seeded(p, "width", macs[p], runs)]
    rows.reverse()
    (ax,) = plots.top1_vs(rows, "macs", fit=False).axes
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    line, _, (segments,) = bars.lines
    assert list(line.get_xdata()) == [1e6, 2e6, 4e6]
    means = [100 * statistics.mean(seeds[p]) for p in ("w1", "w2", "w3")]
    assert list(line.get_ydata()) == pytest.approx(means)
    errs = [half_width(seeds[p]) for p in ("w1", "w2", "w3")]
    assert errs[0] == pytest.approx(4.302653 * 2.0 / 3**0.5)  # std 2 points over 3 runs
    for (x0, y0), (x1, y1) in (seg for seg in segments.get_segments()):
        k = [1e6, 2e6, 4e6].index(x0)
        assert x1 == x0 and (y0, y1) == pytest.approx((means[k] - errs[k], means[k] + errs[k]))
    assert legend_texts(ax) == ["width"]


def test_every_figure_draws_the_interval_where_a_network_has_two_runs():
    rows = seeded("w1", "width", 1e6, [0.80, 0.84], train_images_per_sec=100.0)
    rows += seeded("w2", "width", 4e6, [0.86], train_images_per_sec=50.0)
    rows[1]["train_images_per_sec"] = 80.0  # w1: 0.01 and 0.0125 s per image
    err = half_width([0.80, 0.84])

    def interval_segments(ax):
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        return [s for c in bars for coll in c.lines[2] for s in coll.get_segments()]

    (ax,) = plots.pareto(rows).axes
    assert sorted(tuple(p) for c in ax.collections[:1] for p in c.get_offsets()) == [(1e6, 82.0), (4e6, 86.0)]
    ((start, end),) = interval_segments(ax)
    assert (start[1], end[1]) == pytest.approx((82.0 - err, 82.0 + err))
    left, right = plots.time_vs_macs(rows).axes
    ((start, end),) = interval_segments(left)
    sec = half_width([0.01 / 100, 0.0125 / 100])  # the same formula on seconds (half_width scales by 100)
    assert (start[1], end[1]) == pytest.approx((0.01125 - sec, 0.01125 + sec))
    assert len(interval_segments(right)) == 1
    abg = [dict(r, strategy="abg") for r in rows]
    (ax,) = plots.abg_ranking(abg).axes
    assert [p.get_width() for p in ax.patches] == pytest.approx([86.0, 82.0])
    ((start, end),) = interval_segments(ax)
    assert (start, end) == (pytest.approx((82.0 - err, 1)), pytest.approx((82.0 + err, 1)))  # w1 ranks second
    assert [t.get_text() for t in ax.get_yticklabels()] == ["w2", "w1"]


def test_panels_draw_one_strategy_each_with_a_shared_accuracy_axis():
    fig = plots.panels(TABLE, title="t")
    width_ax, depth_ax = fig.axes
    (width,), (depth,) = data_lines(width_ax), data_lines(depth_ax)
    assert list(width.get_xdata()) == [1e6, 3e6, 9e6] and list(depth.get_ydata()) == pytest.approx([81.0, 83.0])
    assert width_ax.get_title() == "scale width" and depth_ax.get_title() == "scale depth"
    assert width_ax.get_xscale() == depth_ax.get_xscale() == "log"
    assert width_ax.get_shared_y_axes().joined(width_ax, depth_ax)
    assert [t.get_text() for t in width_ax.texts] == ["", "", ""]  # no 'width' column: no point labels
    assert fig.get_suptitle() == "t"


def test_equal_flops_bars_are_the_mean_top1_per_strategy_and_budget():
    rows = [
        row("eq-w", "width", 1.02e7, 0.80, target_macs=1e7),
        *seeded("eq-d", "depth", 0.99e7, [0.78, 0.76], target_macs=1e7),  # two seeds
        row("eq2-w", "width", 2e7, 0.83, target_macs=2e7),
        row("eq2-d", "depth", 2e7, 0.82, target_macs=2e7),
    ]
    (ax,) = plots.equal_flops(rows).axes
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    heights = [patch.get_height() for c in bars for patch in c.patches]
    assert heights == pytest.approx([80.0, 83.0, 77.0, 82.0])  # width at both budgets, then depth
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10M MACs", "20M MACs"]
    assert legend_texts(ax) == ["width", "depth"] and ax.get_ylabel() == "top-1 accuracy (%)"
    errors = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    (segment,) = [s for c in errors for coll in c.lines[2] for s in coll.get_segments()]
    assert [y for _, y in segment] == pytest.approx([77.0 - 12.706205, 77.0 + 12.706205])  # t(0.975, 1) * 1.414 / 1.414
    assert "80.0\n1.02x" in [t.get_text() for t in ax.texts]


def test_pareto_draws_every_point_and_the_frontier():
    (ax,) = plots.pareto(TABLE).axes
    drawn = sorted(tuple(p) for c in ax.collections for p in c.get_offsets())
    assert drawn == sorted((r["macs"], 100 * r["top1"]) for r in TABLE[:5])
    (front,) = [line for line in ax.get_lines() if line.get_label() == "Pareto frontier"]
    assert list(front.get_xdata()) == [1e6, 2e6, 3e6, 9e6]
    assert list(front.get_ydata()) == pytest.approx([80.0, 81.0, 84.0, 86.0])
    assert ax.get_xscale() == "log"


def test_time_vs_macs_draws_measured_seconds_per_image():
    left, right = plots.time_vs_macs(TABLE).axes
    width = data_lines(left)[0]
    assert list(width.get_xdata()) == [1e6, 3e6, 9e6]
    assert list(width.get_ydata()) == pytest.approx([1 / 900, 1 / 300, 1 / 100])
    assert left.get_xscale() == left.get_yscale() == right.get_xscale() == "log"
    assert left.get_ylabel() == "measured training time per image (s)"
    # Seconds per multiply-add relative to the median point: the width points all take 1.11e-9 s.
    assert list(data_lines(right)[0].get_ydata()) == pytest.approx([1.0, 1.0, 1.0])


def test_abg_ranking_orders_candidates_by_top1():
    rows = [row(f"abg-{k}", "abg", 2e6 + k, acc) for k, acc in enumerate((0.80, 0.83, 0.81))]
    (ax,) = plots.abg_ranking(rows).axes
    assert [p.get_width() for p in ax.patches] == pytest.approx([83.0, 81.0, 80.0])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1", "2", "0"]


def test_abg_ranking_ranks_on_validation_and_merges_candidates_that_are_one_network():
    # Test top-1 would rank 0 first; validation, which chooses, ranks 1 first. Candidates 1 and 2
    # solved to the same network (same width, resolution, MACs, params and activations): one bar.
    net = {"width": 1.0, "resolution": 32, "activations": 5e5}
    rows = [
        row("abg-0", "abg", 3e6, 0.85, ema=0.85, val_top1_ema=0.80, **net, series="abg"),
        row("abg-1", "abg", 3e6, 0.82, ema=0.82, val_top1_ema=0.84, **dict(net, width=1.1)),
        row("abg-2", "abg", 3e6, 0.82, ema=0.82, val_top1_ema=0.84, **dict(net, width=1.1)),
    ]
    (ax,) = plots.abg_ranking(rows).axes
    assert [p.get_width() for p in ax.patches] == pytest.approx([84.0, 80.0])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1 = 2", "0"]
    assert ax.get_xlabel() == "validation EMA top-1 accuracy (%), which chooses"


def test_a_fitted_curve_runs_over_the_data_and_dashed_beyond():
    (ax,) = plots.top1_vs(TABLE[:3], "macs").axes
    solid = [line for line in ax.get_lines() if line.get_marker() == "None" and line.get_linestyle() == "-"]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    ((solid,), (dashed,)) = solid, dashed
    assert (min(solid.get_xdata()), max(solid.get_xdata())) == pytest.approx((1e6, 9e6))
    assert (min(dashed.get_xdata()), max(dashed.get_xdata())) == pytest.approx((9e6, 9e6 * plots.EXTRAPOLATE))
    # Three points fix three parameters: the curve passes through them.
    assert np.interp(3e6, solid.get_xdata(), solid.get_ydata()) == pytest.approx(84.0, abs=0.3)
    assert ax.xaxis.get_major_formatter()(1e7, 0) == "10M"


def test_panels_label_each_point_with_its_scale():
    labelled = plots.panels([dict(r, width=w) for r, w in zip(TABLE[:3], (2, 0.5, 1.5), strict=True)])
    assert sorted(t.get_text() for t in labelled.axes[0].texts) == ["w=0.5", "w=1.5", "w=2"]


# ----------------------------------------------------------------------------- files


def test_plot_all_writes_every_figure(tmp_path):
    table = results.read_table(FIXTURE)
    rows = [r for r in table if r["sweep"] in ("width", "depth")]
    written = plots.plot_all(rows, tmp_path)
    rows = [r for r in table if r["sweep"] in ("equal_flops", "abg_grid")]
    written += plots.plot_all(rows, tmp_path, formats=("png",))  # SVG is slow: once above is enough
    names = {p.name for p in written}
    for stem in (
        "width_top1_vs_macs",
        "width_pareto",
        "width_top1_vs_params",
        "width_top1_vs_train_time",
        "width_time_vs_macs",
        "all_pareto",
        "all_top1_vs_macs",
        "all_top1_vs_macs_panels",
    ):
        assert {f"{stem}.png", f"{stem}.svg"} <= names, stem
    assert {"equal_flops_equal_flops.png", "equal_flops_top1_vs_macs_panels.png", "abg_grid_ranking.png"} <= names
    assert "abg_grid_top1_vs_macs.png" not in names  # candidates at one phi are ranked, not joined
    assert (tmp_path / "width_top1_vs_macs.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "width_top1_vs_macs.svg").read_text().lstrip().startswith("<?xml")


def test_figures_tolerate_empty_and_unfinished_tables(tmp_path):
    assert plots.plot_all([], tmp_path) == []
    pending = [{"sweep": "s", "strategy": "width", "point": "p", "status": "pending", "macs": 1e6}]
    assert plots.plot_all(pending, tmp_path) == []
    one = [row("p", "width", 1e6, 0.9)]
    drawn = {p.name for p in plots.plot_all(one, tmp_path, formats=("png",))}
    assert drawn == {"s_top1_vs_macs.png", "s_pareto.png", "s_top1_vs_params.png"}


def test_notebook_runs_headless_on_the_fixture():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "experiments" / "scaling.ipynb", as_version=4)
    nb.cells[1].source = f"RESULTS = {str(FIXTURE)!r}\nSAVE_FIGURES_TO = None"
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "experiments")}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 10
    text = "".join(o.get("text", "") for o in outputs)
    assert "50 rows from" in text and "width_at_depth_resolution: 12 points" in text
    assert "networks; runs per network: 1" in text  # the fixture has one seed per network: values, no intervals
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "## Claim 1: scaling any single dimension improves accuracy" in markdown


def test_a_base_point_starts_every_line():
    rows = [
        row("base", "base", 1e6, 0.80, sweep="r"),
        row("w2", "width", 4e6, 0.82, target_macs=4e6, sweep="r"),
        row("d2", "depth", 2e6, 0.81, sweep="r"),
    ]
    groups = plots.series_of(rows)
    assert list(groups) == ["width", "depth"]
    assert [r["point"] for r in groups["width"]] == ["base", "w2"] and groups["depth"][0]["point"] == "base"
    assert plots.series_of(rows[:1]) == {"base": rows[:1]}
    # The budget point stays on its line when its sweep has a base; a bare equal-FLOPs sweep's does not.
    assert [r["point"] for r in plots.overview_rows(rows)] == ["base", "w2", "d2"]
    assert [r["point"] for r in plots.overview_rows(rows[1:])] == ["d2"]
    figs = plots.figures_for(rows, "r")
    assert {"top1_vs_macs", "top1_vs_macs_panels", "equal_flops"} <= set(figs)
    assert len(figs["top1_vs_macs_panels"].axes) == 2  # width and depth; no panel of its own for the base
    width, depth = data_lines(figs["top1_vs_macs"].axes[0])
    assert (list(width.get_xdata()), list(width.get_ydata())) == ([1e6, 4e6], pytest.approx([80.0, 82.0]))
    assert (list(depth.get_xdata()), list(depth.get_ydata())) == ([1e6, 2e6], pytest.approx([80.0, 81.0]))


def test_saving_a_figure_twice_writes_the_same_bytes(tmp_path):
    # Regenerating committed figures from unchanged records must not change a file (no date, stable clip ids).
    fig = Figure()
    fig.add_subplot().plot([1, 2, 3], [3, 1, 2])
    first = {p.name: p.read_bytes() for p in plots.save(fig, tmp_path / "a", "fig")}
    second = {p.name: p.read_bytes() for p in plots.save(fig, tmp_path / "b", "fig")}
    assert set(first) == {"fig.png", "fig.svg"} and first == second
    assert b"<dc:date>" not in first["fig.svg"]
