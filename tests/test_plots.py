"""The saturating fit, the figures and the notebook, on the small synthetic fixture table."""

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from effscale import fit, plots, results  # noqa: E402

FIXTURE = ROOT / "experiments" / "fixtures" / "scaling.csv"


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
    assert all(p.stat().st_size > 1000 for p in written)
    assert (tmp_path / "width_top1_vs_macs.png").read_bytes()[:4] == b"\x89PNG"


def test_figures_tolerate_empty_and_unfinished_tables(tmp_path):
    assert plots.plot_all([], tmp_path) == []
    pending = [{"sweep": "s", "strategy": "width", "point": "p", "status": "pending", "macs": 1e6}]
    assert plots.plot_all(pending, tmp_path) == []
    one = [{"sweep": "s", "strategy": "width", "point": "p", "status": "done", "macs": 1e6, "top1": 0.9}]
    assert {p.name for p in plots.plot_all(one, tmp_path, formats=("png",))} == {
        "s_top1_vs_macs.png",
        "s_pareto.png",
    }


def test_notebook_runs_headless_on_the_fixture(tmp_path):
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


def test_a_base_point_starts_every_line():
    row = lambda name, strategy, macs, top1, **kw: {  # noqa: E731
        "sweep": "r",
        "point": name,
        "strategy": strategy,
        "status": "done",
        "macs": macs,
        "top1": top1,
        **kw,
    }
    rows = [
        row("base", "base", 1e6, 0.80),
        row("w2", "width", 4e6, 0.82, target_macs=4e6),
        row("d2", "depth", 2e6, 0.81),
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
