"""The claims report: verdicts and numbers on tables whose answer is known, and --mode=report end to end."""

import dataclasses
import json
import math
import statistics
from pathlib import Path

from configs.sweeps import base
from effscale import record, report, stats, sweep

ROOT = Path(__file__).resolve().parents[1]
V0_EXAMPLE = ROOT / "tests" / "data" / "result_v0.json"
T95 = {2: 12.706205, 3: 4.302653}  # t(0.975, n - 1) for n runs
SEED_NOISE = {0: 0.0, 1: 0.1, 2: -0.1}  # percent points added to every network of a seed


def run(sweep_name, strategy, network, seed, macs, top1_pp, **extra):
    """A finished run's row; accuracy given in percent points (the table holds fractions)."""
    return {
        "sweep": sweep_name,
        "strategy": strategy,
        "series": extra.pop("series", strategy),
        "network": network,
        "point": network if seed == 0 else f"{network}_s{seed}",
        "seed": seed,
        "status": "done",
        "macs": macs,
        "top1": top1_pp / 100.0,
        **extra,
    }


def line(dim, curve, seeds=(0, 1, 2), sweep_name=None, wiggle=0.05):
    """A line of 4 networks at 1, 2, 4, 8 M MACs; `curve(L)` in percent at L = log2(MACs / 1M).

    Each (network, seed) also gets a small deterministic wiggle, so that the seeds disagree a little.
    """
    rows = []
    for k in range(4):
        for s in seeds:
            value = curve(k) + SEED_NOISE[s] + wiggle * math.sin(3 * k + 7 * s)
            rows.append(run(sweep_name or dim, dim, f"{dim}-{k}", s, 1e6 * 2**k, value))
    return rows


def concave(k):
    return 80 + 2 * k - 0.3 * k * k


def convex(k):
    return 80 + 0.5 * k + 0.4 * k * k


def claims(rows):
    return {c.number: c for c in report.evaluate(rows)}


def by_hand(values):
    """The report's text for a paired mean and 95% interval, computed with statistics and a t table."""
    mean = statistics.mean(values)
    half = T95[len(values)] * statistics.stdev(values) / math.sqrt(len(values))
    return f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}] (n={len(values)})"


def by_hand_level(values):
    """The report's text for an accuracy's mean and 95% interval."""
    mean = statistics.mean(values)
    half = T95[len(values)] * statistics.stdev(values) / math.sqrt(len(values))
    return f"{mean:.2f} [{mean - half:.2f}, {mean + half:.2f}] (n={len(values)})"


def test_claim_1_supported_when_every_dimension_gains_less_per_doubling():
    rows = line("width", concave) + line("depth", concave) + line("resolution", concave)
    c = claims(rows)[1]
    assert c.verdict == report.SUPPORTED
    width = next(x for x in c.lines if x.startswith("| width | width |"))
    runs = {(r["network"], r["seed"]): 100 * r["top1"] for r in rows if r["strategy"] == "width"}
    assert by_hand([runs["width-3", s] - runs["width-0", s] for s in (0, 1, 2)]) in width
    assert "1M -> 8M (8.0x)" in width and "| 4 |" in width
    # Curvature per seed: 2 x the quadratic coefficient of top-1 on log2(MACs), fitted per seed.
    macs = [1e6, 2e6, 4e6, 8e6]
    per_seed = [stats.curvature_per_doubling(macs, [runs[f"width-{k}", s] for k in range(4)]) for s in (0, 1, 2)]
    assert all(-0.7 < v < -0.5 for v in per_seed) and by_hand(per_seed) in width  # the truth: 2 x -0.3


def test_claim_1_not_supported_when_a_dimension_accelerates():
    rows = line("width", concave) + line("depth", concave) + line("resolution", convex)
    c = claims(rows)[1]
    assert c.verdict == report.NOT_SUPPORTED
    assert next(x for x in c.lines if x.startswith("| resolution |")).endswith(f"| {report.NOT_SUPPORTED} |")


def test_claim_1_with_one_seed_or_a_missing_dimension_is_undecided():
    single = line("width", concave, seeds=(0,)) + line("depth", concave, (0,)) + line("resolution", concave, (0,))
    c = claims(single)[1]
    assert c.verdict == report.UNDECIDED and "(n=1: no interval)" in c.lines[2]
    text = report.render(report.evaluate(single), single)
    assert "intervals need n >= 2 seeds" in text and text.count(f"**Verdict: {report.UNDECIDED}.**") == 4
    two = claims(line("width", concave) + line("depth", concave))[1]
    assert two.verdict == report.UNDECIDED and "No finished line scales resolution" in two.lines[-1]


def budget(compound_lead):
    """An equal-FLOPs budget at 32M MACs: compound leads each dimension by `compound_lead[dim]` points."""
    rows = []
    for s in (0, 1, 2):
        rows.append(run("eq", "compound", "eq-compound", s, 32.3e6, 85 + SEED_NOISE[s], target_macs=32e6))
        for k, dim in enumerate(("width", "depth", "resolution")):
            value = 85 - compound_lead[dim] + SEED_NOISE[s] + 0.05 * math.sin(5 * k + 3 * s)
            rows.append(run("eq", dim, f"eq-{dim}", s, 31.8e6, value, target_macs=32e6))
    return rows


def test_claim_2_compares_compound_with_each_dimension_at_its_budget():
    rows = budget({"width": 1.0, "depth": 0.5, "resolution": 0.8})
    c = claims(rows)[2]
    assert c.verdict == report.SUPPORTED
    row = next(x for x in c.lines if "| depth |" in x)
    depth = {r["seed"]: r["top1"] for r in rows if r["network"] == "eq-depth"}
    comp = {r["seed"]: r["top1"] for r in rows if r["network"] == "eq-compound"}
    assert by_hand([100 * (comp[s] - depth[s]) for s in (0, 1, 2)]) in row
    assert row.endswith("| 0.994 | 1.009 |")  # achieved MACs over the budget: 31.8M and 32.3M of 32M
    assert claims(budget({"width": 1.0, "depth": -0.5, "resolution": 0.8}))[2].verdict == report.NOT_SUPPORTED
    assert claims(budget({"width": 1.0, "depth": 0.0, "resolution": 0.8}))[2].verdict == report.UNDECIDED
    alone = claims([r for r in rows if r["strategy"] != "compound"])[2]
    assert alone.verdict == report.UNDECIDED and "no finished compound point" in alone.lines[-1]


def compound_line(coefficients, values, macs=None, sweep_name="compound"):
    """A compound line at phi 0..3, `values[phi]` in percent, MACs 1, 2, 4, 8 M unless given."""
    network = "compound-a{}-b{}-g{}".format(*coefficients.split("/"))
    macs = macs or [1e6, 2e6, 4e6, 8e6]
    return [
        run(
            sweep_name,
            "compound",
            f"{network}-phi{phi}",
            s,
            macs[phi],
            values[phi] + SEED_NOISE[s] + 0.03 * math.sin(phi + 5 * s),
            phi=float(phi),
            coefficients=coefficients,
        )
        for phi in range(4)
        for s in (0, 1, 2)
    ]


def grid(winner="1.4/1.1/1.1"):
    """abg candidates at phi = 1: `winner` ahead of the paper's coefficients by 0.6 points."""
    rows = []
    for s in (0, 1, 2):
        rows.append(run("abg_grid", "abg", f"abg-{winner}", s, 4e6, 84.6 + SEED_NOISE[s], coefficients=winner))
        rows.append(run("abg_grid", "abg", "abg-paper", s, 4e6, 84 + SEED_NOISE[s], coefficients="1.2/1.1/1.15"))
    return rows


def test_claim_3_the_grids_pick_stays_ahead_at_larger_phi():
    rows = grid() + compound_line("1.4/1.1/1.1", [80, 82, 84, 85]) + compound_line("1.2/1.1/1.15", [80, 81.5, 83, 84])
    c = claims(rows)[3]
    assert c.verdict == report.SUPPORTED
    assert c.lines[0].startswith(
        "The grid (2 candidates at phi = 1) picked 1.4/1.1/1.1, ahead of 1.2/1.1/1.15 by +0.60"
    )
    phi3 = next(x for x in c.lines if x.startswith("| compound | 3 |"))
    assert "| 1.2/1.1/1.15 | phi 3 |" in phi3 and "+1.00 [" in phi3
    assert any(x.startswith("| compound | 1 (where it was chosen) |") for x in c.lines)
    reversed_ = (
        grid() + compound_line("1.4/1.1/1.1", [80, 82, 84, 83]) + compound_line("1.2/1.1/1.15", [80, 81.5, 83, 84])
    )
    assert claims(reversed_)[3].verdict == report.NOT_SUPPORTED


def test_claim_3_the_grid_chooses_on_validation_and_shows_its_ranking():
    # 1.4/1.1/1.1 is ahead on the reported (test) accuracy, 1.2/1.1/1.15 on validation: validation chooses.
    rows = grid()
    for r in rows:
        r["val_top1"] = r["top1"] + (-0.010 if r["coefficients"] == "1.4/1.1/1.1" else 0.0)
    lines = claims(rows)[3].lines
    val = {(r["coefficients"], r["seed"]): 100 * r["val_top1"] for r in rows}
    lead = by_hand([val["1.2/1.1/1.15", s] - val["1.4/1.1/1.1", s] for s in (0, 1, 2)])
    assert lines[0] == (
        f"The grid (2 candidates at phi = 1) picked 1.2/1.1/1.15, ahead of 1.4/1.1/1.1 by {lead}, "
        "chosen on validation top-1 (`val_top1`)."
    )
    first, second = (x for x in lines if x.startswith(("| 1 |", "| 2 |")))
    test = [100 * r["top1"] for r in rows if r["coefficients"] == "1.2/1.1/1.15"]
    assert first.startswith("| 1 | 1.2/1.1/1.15 | 4M |") and f"| {by_hand_level(test)} |" in first
    assert second.startswith("| 2 | 1.4/1.1/1.1 |") and "| -0.40 [" in second
    assert claims(grid())[3].lines[0].endswith("chosen on `top1` (these records have no validation split).")
    for r in rows:  # the report compares EMA weights: the grid chooses on the validation split's EMA too
        ahead = 0.02 if r["coefficients"] == "1.4/1.1/1.1" else 0.0
        r["ema_top1"], r["val_top1_ema"] = r["top1"], r["val_top1"] + ahead
    ema = claims(rows)[3].lines[0]
    assert "picked 1.4/1.1/1.1" in ema and ema.endswith("chosen on validation top-1 (`val_top1_ema`).")


def test_claim_3_candidates_that_solve_to_the_same_network_are_one_candidate():
    # Rounding can map two depth multipliers to the same repeats: such runs train one model, and
    # counting it twice would pair the model with itself. The paper's coefficients name it.
    same = {"width": 1.049, "resolution": 34, "params": 7_109_936, "activations": 367_168}
    rows = [dict(r, **same) | ({"width": 1.1} if r["coefficients"] == "1.4/1.1/1.1" else {}) for r in grid()]
    twins = [
        dict(r, coefficients="1.4/1.2/1.05", network="abg-twin", point=f"abg-twin_s{r['seed']}")
        for r in rows
        if r["coefficients"] == "1.2/1.1/1.15"
    ]
    lines = claims(twins + rows)[3].lines
    assert lines[0].startswith(
        "The grid (2 networks of 3 candidates at phi = 1) picked 1.4/1.1/1.1, "
        "ahead of 1.2/1.1/1.15 = 1.4/1.2/1.05 by +0.60"
    )
    same = "1.2/1.1/1.15 and 1.4/1.2/1.05 solve to the same network (4M MACs): their runs are one candidate."
    assert lines[1] == same
    ranked = [x for x in lines if x.startswith(("| 1 |", "| 2 |", "| 3 |"))]
    assert [x.split(" | ")[1] for x in ranked] == ["1.4/1.1/1.1", "1.2/1.1/1.15 = 1.4/1.2/1.05"]


def test_claim_3_compares_at_equal_macs_by_interpolating_the_other_line():
    # The other line costs 2x as much at each phi, so the same phi is no comparison; interpolated at the pick's
    # MACs, its value at 4M (the pick's phi 2) is its own phi-1 point.
    winner = compound_line("1.4/1.1/1.1", [80, 82, 84, 85])
    other = compound_line("1.2/1.1/1.15", [81, 83, 84.5, 86], macs=[2e6, 4e6, 8e6, 16e6])
    c = claims(grid() + winner + other)[3]
    phi2 = next(x for x in c.lines if x.startswith("| compound | 2 |"))
    mine = {r["seed"]: 100 * r["top1"] for r in winner if r["phi"] == 2.0}
    theirs = {r["seed"]: 100 * r["top1"] for r in other if r["phi"] == 1.0}
    assert "| interpolated |" in phi2 and by_hand([mine[s] - theirs[s] for s in (0, 1, 2)]) in phi2
    # Between two of its points: halfway in log MACs is the mean of the two values.
    shifted = compound_line("1.2/1.1/1.15", [81, 83, 84.5, 86], macs=[1.5e6, 3e6, 6e6, 12e6])
    line3 = next(x for x in claims(grid() + winner + shifted)[3].lines if x.startswith("| compound | 3 |"))
    at8 = {s: None for s in (0, 1, 2)}
    for s in at8:
        lo, hi = (100 * r["top1"] for r in shifted if r["seed"] == s and r["phi"] in (2.0, 3.0))
        at8[s] = lo + (hi - lo) * math.log(8 / 6) / math.log(2)
    mine3 = {r["seed"]: 100 * r["top1"] for r in winner if r["phi"] == 3.0}
    assert by_hand([mine3[s] - at8[s] for s in (0, 1, 2)]) in line3
    lone = claims(grid() + winner + compound_line("1.2/1.1/1.15", [81, 83, 84.5, 86], macs=[9e6, 18e6, 36e6, 72e6]))
    assert any("| outside its MACs range | n/a |" in x for x in lone[3].lines) and lone[3].verdict == report.UNDECIDED


def test_claim_3_says_what_to_run_when_a_line_is_missing():
    c = claims(grid() + compound_line("1.2/1.1/1.15", [80, 81.5, 83, 84]))[3]
    assert c.verdict == report.UNDECIDED
    assert any("run configs/sweeps/compound.py:coefficients=1.4/1.1/1.1" in x for x in c.lines)
    no_grid = claims(compound_line("1.4/1.1/1.1", [80, 82, 84, 85]) + compound_line("1.2/1.1/1.15", [80, 81.5, 83, 84]))
    assert no_grid[3].verdict == report.SUPPORTED and "is the best compound line at phi = 1" in no_grid[3].lines[0]


def test_the_report_never_fails_on_missing_points():
    pending = [{"sweep": "w", "strategy": "width", "point": "p", "status": "pending", "macs": 1e6}]
    for rows in ([], pending, [run("w", "width", "w1", 0, 1e6, 80.0)], [run("w", "width", "w1", 0, None, 80.0)]):
        text = report.render(report.evaluate(rows), rows, "t")
        assert text.count(f"**Verdict: {report.UNDECIDED}.**") == 4


def _finished_point(workdir, p, cfg, top1):
    """A finished point written by hand: point.json as the driver writes it, result.json as the trainer does."""
    d = workdir / p.name
    d.mkdir(parents=True)
    desc = sweep.describe_model(cfg.model)
    (d / "point.json").write_text(json.dumps({"sweep": "width", **p.as_dict(), "describe": desc}))
    v0 = record.read_record(V0_EXAMPLE)
    written = dataclasses.replace(
        v0, eval_top1=top1, eval_top1_ema=top1, macs=desc["macs"], config=sweep.config_json(cfg)
    )
    record.write_record(d / "result.json", written)


def test_report_mode_writes_report_md_from_hand_written_records(tmp_path, capsys):
    config = importlib_width("widths=1/1.5/2/3,seeds=2")
    pairs = sweep.expand(config)
    for k, (p, cfg) in enumerate(pairs[:6]):  # two of the eight runs have not finished
        _finished_point(tmp_path, p, cfg, 0.80 + 0.01 * (k % 4) + 0.002 * (k // 4))
    assert sweep.main(config, str(tmp_path), "report") == 0
    out = capsys.readouterr().out
    assert f"claim 1: {report.UNDECIDED}" in out and str(tmp_path / "report.md") in out
    text = (tmp_path / "report.md").read_text()
    assert text.startswith("# The paper's claims: width in ") and "runs per network: 1 to 2" in text
    assert "| width | width | 8.47M -> " in text and "No finished line scales depth, resolution" in text


def importlib_width(arg):
    from configs.sweeps import width

    return width.get_config(arg)


def test_seeds_of_base_name_their_runs_as_the_report_pairs_them():
    assert base.seeded_name("width-1.5", 0) == "width-1.5" and base.seeded_name("width-1.5", 2) == "width-1.5_s2"


def fig4_line(depth, px, macs, values, seeds=(0, 1, 2)):
    """A Figure 4 width line at (depth, px): widths 0.5 / 1 / 1.5 at `macs` with `values` in percent."""
    rows = []
    for k, (w, m, v) in enumerate(zip((0.5, 1.0, 1.5), macs, values, strict=True)):
        for s in seeds:
            value = v + SEED_NOISE[s] + 0.05 * math.sin(3 * k + 7 * s + depth + px)
            extra = {"series": f"d={depth:g}, r={px}", "width": w, "depth": depth, "resolution": px}
            rows.append(run("fig4", "width", f"d{depth:g}-r{px}-w{w:g}", s, m, value, **extra))
    return rows


def _top1(rows, macs):
    return {r["seed"]: 100 * r["top1"] for r in rows if r["macs"] == macs}


def test_claim_4_compares_figure_4s_lines_at_equal_macs_where_they_overlap():
    base = fig4_line(1.0, 32, (2e6, 8e6, 16e6), (80, 82, 83))
    top = fig4_line(2.0, 42, (4e6, 16e6, 64e6), (82, 84, 85))
    middle = fig4_line(2.0, 32, (3e6, 9e6, 20e6), (79, 80, 81))  # worse than the base: context only
    c = claims(base + top + middle)[4]
    assert c.verdict == report.SUPPORTED
    rows = [x for x in c.lines if x.startswith("| fig4 | d=2, r=42 | d=1, r=32 |")]
    assert [x.split(" | ")[3] for x in rows] == ["4M", "8M", "16M"]  # 2M and 64M lie outside the overlap
    # 4M is halfway between the base's 2M and 8M in log MACs; 8M halfway between the top line's 4M and 16M.
    b2, b8, b16 = (_top1(base, m) for m in (2e6, 8e6, 16e6))
    t4, t16 = (_top1(top, m) for m in (4e6, 16e6))
    assert by_hand([t4[s] - (b2[s] + b8[s]) / 2 for s in (0, 1, 2)]) in rows[0] and "| d=2, r=42 |" in rows[0]
    assert by_hand([(t4[s] + t16[s]) / 2 - b8[s] for s in (0, 1, 2)]) in rows[1]
    assert by_hand([t16[s] - b16[s] for s in (0, 1, 2)]) in rows[2] and "d=2, r=42 and d=1, r=32" in rows[2]
    assert any(x.startswith("| fig4 | d=2, r=32 | d=1, r=32 |") and "[-" in x for x in c.lines)
    assert f"| fig4 | d=1, r=32 | 0.5 | 2M | {by_hand_level(list(b2.values()))} |" in c.lines
    assert claims(base + fig4_line(2.0, 42, (4e6, 16e6, 64e6), (79, 81, 82)))[4].verdict == report.NOT_SUPPORTED
    apart = claims(base + fig4_line(2.0, 42, (32e6, 64e6, 128e6), (84, 85, 86)))[4]
    assert apart.verdict == report.UNDECIDED and any("no MACs in common" in x for x in apart.lines)
    assert claims(base)[4].verdict == report.UNDECIDED  # one line: nothing to compare
