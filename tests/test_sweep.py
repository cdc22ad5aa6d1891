"""Sweep expansion, sharding and the driver (skip, resume, failures, a killed driver) with fake runs."""

import dataclasses
import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from configs.sweeps import base
from effscale import complexity, record, results, spec, sweep

ROOT = Path(__file__).resolve().parents[1]
V0_EXAMPLE = ROOT / "tests" / "data" / "result_v0.json"

SWEEPS = (
    "width",
    "depth",
    "resolution",
    "width_at_depth_resolution",
    "compound",
    "equal_flops",
    "abg_grid",
    "reproduce",
)


def load(name: str, arg: str | None = None):
    return importlib.import_module(f"configs.sweeps.{name}").get_config(arg)


def tiny_sweep(n: int = 3):
    """A small-scale sweep config of `n` width points (never trained: the run functions are fakes)."""
    c = base.get_config()
    c.sweep = sweep.block("tiny", [sweep.point(f"w{k}", "width", {"model.width": 1.0 + k / 4}) for k in range(n)])
    return c


def fake_run(calls: list, fail: set = frozenset()):
    def run_fn(config, workdir):
        name = Path(workdir).name
        calls.append(name)
        if name in fail:
            raise RuntimeError(f"boom in {name}")
        top1 = 0.5 + config.model.width / 10
        return dataclasses.replace(
            record.read_record(V0_EXAMPLE), eval_top1=top1, eval_top1_ema=top1, train_images_per_sec=100.0
        )

    return run_fn


# ----------------------------------------------------------------------------- expansion


@pytest.mark.parametrize("name", SWEEPS)
@pytest.mark.parametrize("arg", [None, "dataset=imagenet2012"])
def test_every_sweep_expands_to_valid_points(name, arg):
    config = load(name, arg)
    assert sweep.is_sweep(config)
    expanded = sweep.expand(config)  # applies every override: an unknown key would raise here
    names = [p.name for p, _ in expanded]
    assert len(names) == len(set(names)) >= 2
    base_config = sweep.base_of(config)
    assert "sweep" not in base_config
    for p, cfg in expanded:
        assert p.strategy and "sweep" not in cfg
        for path, value in p.overrides.items():
            node = cfg
            for part in path.split("."):
                node = node[part]
            assert node == value
        desc = sweep.describe_model(cfg.model)
        assert "error" not in desc, (p.name, desc)
        assert desc["macs"] > 0
    paper = arg is not None
    assert (base_config.model.resolution is None) == paper  # the paper's B0 is 224 px from its preset
    if not paper:
        assert base_config.data.name == "fashion_mnist" and base_config.model.resolution == 32


def test_grid_of_user_values():
    points = sweep.points_of(load("grid", "widths=1/1.5,resolutions=32/48"))
    assert [p.name for p in points] == ["w1-d1-r32", "w1-d1-r48", "w1.5-d1-r32", "w1.5-d1-r48"]
    assert {p.series for p in points} == {"d=1, r=32", "d=1, r=48"}
    for _, cfg in sweep.expand(load("grid", "widths=1/2,depths=1/2,resolutions=32/48")):
        assert "error" not in sweep.describe_model(cfg.model)


def test_sweep_arguments():
    assert [p.name for p, _ in sweep.expand(load("width", "widths=1/2.5"))] == ["width-1", "width-2.5"]
    assert [p.name for p, _ in sweep.expand(load("resolution", "resolutions=1/1.5"))] == [
        "resolution-32",
        "resolution-48",
    ]
    assert [p.name for p, _ in sweep.expand(load("compound", "phis=2"))] == ["compound-phi2"]
    small_on_imagenet = load("width", "dataset=imagenet2012,scale=small")
    assert small_on_imagenet.model.resolution == 32 and small_on_imagenet.data.name == "imagenet2012"
    with pytest.raises(ValueError, match="Unknown config argument"):
        load("width", "widht=2")
    with pytest.raises(ValueError, match="alpha must be >= 1"):
        load("compound", "alpha=0.9")


def test_fig4_has_four_series_and_compound_uses_coefficients():
    points = sweep.points_of(load("width_at_depth_resolution"))
    assert {p.series for p in points} == {"d=1, r=1", "d=2, r=1", "d=1, r=1.3", "d=2, r=1.3"}
    assert {p.overrides["model.resolution"] for p in points} == {32, 42}
    cfgs = dict((p.name, c) for p, c in sweep.expand(load("compound", "alpha=1.4,beta=1.1,gamma=1.1")))
    assert cfgs["compound-phi1"].model.alpha == 1.4
    assert sweep.describe_model(cfgs["compound-phi2"].model)["depth"] == pytest.approx(1.96)


# ----------------------------------------------------------------------------- seeds, lines to 16x, equal-MACs grid


@pytest.mark.parametrize("name", SWEEPS + ("grid",))
def test_every_sweep_repeats_its_points_for_each_seed(name):
    one = sweep.points_of(load(name))
    arg = "widths=1/2,seeds=0/3" if name == "grid" else "seeds=0/3"
    two = sweep.expand(load(name, arg))
    if name == "grid":
        one = sweep.points_of(load(name, "widths=1/2"))
    assert [p.name for p, _ in two] == [p.name for p in one] + [f"{p.name}_s3" for p in one]  # seed 0 first
    for p, cfg in two:
        seed = 3 if p.name.endswith("_s3") else 0
        assert cfg.train.seed == seed and p.meta["seed"] == seed
        assert p.meta["network"] == p.name.removesuffix("_s3")
    assert [p.name for p in sweep.points_of(load(name, arg.replace("0/3", "1")))] == [p.name for p in one]


@pytest.mark.parametrize("name", SWEEPS)
def test_epochs_set_every_points_training_length_and_default_keeps_the_recipes(name):
    recipe = {cfg.train.num_epochs for _, cfg in sweep.expand(load(name))}
    assert recipe == ({1.0} if name == "reproduce" else {2.0})  # its docstring's; the others the small recipe's
    assert {cfg.train.num_epochs for _, cfg in sweep.expand(load(name, "epochs=0.5"))} == {0.5}


def test_only_keeps_the_matching_points_in_order_for_every_seed():
    names = [p.name for p in sweep.points_of(load("width", "only=width-2/width-1*,seeds=2"))]
    assert names == ["width-1", "width-1.5", "width-2", "width-1_s1", "width-1.5_s1", "width-2_s1"]


def test_seeds_set_the_training_seed_and_default_leaves_it_alone():
    ((p, cfg),) = sweep.expand(load("width", "widths=1"))
    assert "train.seed" not in p.overrides and p.meta == {} and cfg.train.seed == 0
    names = {p.name: cfg.train.seed for p, cfg in sweep.expand(load("width", "widths=1,seeds=3"))}
    assert names == {"width-1": 0, "width-1_s1": 1, "width-1_s2": 2}


@pytest.mark.parametrize(
    "arg, message",
    [
        ("seeds=0", "seeds=0: a count of seeds must be >= 1"),
        ("seeds=-2", "seeds=-2: a count of seeds must be >= 1"),
        ("seeds=0/3/3", "seeds=0/3/3: seed 3 appears more than once"),
        ("seeds=1/-4", "seeds=1/-4: seed -4 is negative"),
        ("seeds=1.5", "seeds=1.5: not a count or a list of seeds"),
        ("seeds=a/b", "seeds=a/b: allowed: a count N >= 1"),
        ("doublings=0", "doublings=0: allowed: an integer from 1 to 8"),
        ("epochs=0", "epochs=0: allowed: a number of epochs > 0"),
        ("only=width-9*", "only=width-9*: 'width-9*' matches no point; the points are width-0.5, "),
        ("epochs=many", "epochs=many: allowed: a number of epochs > 0"),
        ("widths=1/2,doublings=2", "widths=1/2 and doublings=2: allowed: one of them, not both"),
    ],
)
def test_bad_seeds_and_doublings_are_one_line_errors(arg, message):
    with pytest.raises(ValueError) as e:
        load("width", arg)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["width", "depth", "resolution"])
@pytest.mark.parametrize("arg", ["doublings=4", "dataset=imagenet2012,doublings=4"])
def test_doublings_reach_16x_the_base_in_doubling_steps(name, arg):
    points = sweep.expand(load(name, arg))
    macs = [sweep.describe_model(cfg.model)["macs"] for _, cfg in points]
    assert macs == [p.meta["solved_macs"] for p, _ in points] and macs == sorted(macs)
    assert macs[-1] >= 16 * macs[0] and [p.meta["doubling"] for p, _ in points] == [0, 1, 2, 3, 4]
    assert points[0][0].name in {f"{name}-1", "resolution-32", "resolution-224"}
    for p, cfg in points:  # one dimension moves, the others stay at the base
        desc = sweep.describe_model(cfg.model)
        assert {k for k in ("width", "depth") if desc[k] != 1.0} <= {name}, p.name
    if "imagenet" in arg or name != "resolution":  # at 32 px no resolution costs 2x (33 px: 2.4x)
        for k, m in enumerate(macs[1:-1], 1):
            assert abs(m / (macs[0] * 2**k) - 1) <= 0.03, (points[k][0].name, m / macs[0])


@pytest.mark.parametrize(
    "scale, target, multiple, max_trim",
    [("", "auto", 4.0, 1.05), ("", "3", 3.0, 1.5), ("dataset=imagenet2012,step=0.1,", "auto", 2.0, 1.05)],
)
def test_abg_candidates_solved_to_the_same_multiply_adds(scale, target, multiple, max_trim):
    points = sweep.expand(load("abg_grid", f"{scale}target={target}"))
    at_phi1 = sweep.points_of(load("abg_grid", scale.rstrip(",") or None))
    assert [p.meta["coefficients"] for p, _ in points] == [p.meta["coefficients"] for p in at_phi1]
    base_macs = sweep.macs_of(load("abg_grid", scale.rstrip(",") or None).model, {})
    for p, cfg in points:
        desc = sweep.describe_model(cfg.model)
        assert p.meta["target_macs"] == pytest.approx(multiple * base_macs, rel=1e-6)
        assert desc["macs"] == p.meta["solved_macs"] and abs(desc["macs"] / p.meta["target_macs"] - 1) <= 0.02, p.name
        # Depth and resolution follow the direction alpha^phi, gamma^phi; width beta^phi times the trim.
        al, be, ga = (float(v) for v in p.meta["coefficients"].split("/"))
        phi = p.meta["phi_solved"]
        assert desc["depth"] == pytest.approx(al**phi, rel=1e-3) and p.name.startswith("abg-a")
        assert desc["width"] == pytest.approx(be**phi * p.meta["width_trim"], rel=1e-3)
        assert 0.99 <= p.meta["width_trim"] <= max_trim, p.name
    with pytest.raises(ValueError, match="target=0.5: allowed: auto, a multiple > 1"):
        load("abg_grid", "target=0.5")


def test_compound_takes_the_grids_coefficients_as_one_argument():
    paper = sweep.points_of(load("compound"))
    assert [p.name for p in paper] == ["compound-phi0", "compound-phi1", "compound-phi2", "compound-phi3"]
    assert {p.series for p in paper} == {"compound"} and paper[0].meta == {"coefficients": "1.2/1.1/1.15"}
    grid = sweep.expand(load("compound", "coefficients=1.4/1.1/1.1,seeds=2"))
    assert [p.name for p, _ in grid][:4] == [p.name for p in paper]  # a workdir of its own keeps the names
    p, cfg = grid[2]
    assert (cfg.model.alpha, cfg.model.beta, cfg.model.gamma, cfg.model.phi) == (1.4, 1.1, 1.1, 2.0)
    assert p.series == "compound 1.4/1.1/1.1" and p.meta["network"] == "compound-a1.4-b1.1-g1.1-phi2"
    assert grid[6][0].name == "compound-phi2_s1" and grid[6][0].meta["network"] == "compound-a1.4-b1.1-g1.1-phi2"
    assert sweep.describe_model(cfg.model)["depth"] == pytest.approx(1.96)
    for arg, message in [
        ("coefficients=1.2/1.1", "coefficients=1.2/1.1: allowed: three numbers >= 1"),
        ("coefficients=1.2/0.9/1.1", "coefficients=1.2/0.9/1.1: allowed: three numbers >= 1"),
        ("coefficients=1.2/1.1/1.1,beta=1.2", "coefficients=1.2/1.1/1.1 and beta=1.2: allowed: one of the two forms"),
    ]:
        with pytest.raises(ValueError, match=message):
            load("compound", arg)


def test_abg_grid_points_satisfy_the_constraint():
    points = sweep.points_of(load("abg_grid"))
    assert any(p.name == "abg-a1.2-b1.1-g1.15" for p in points)
    for p in points:
        o = p.overrides
        assert o["model.phi"] == 1.0
        assert abs(o["model.alpha"] * o["model.beta"] ** 2 * o["model.gamma"] ** 2 - 2) <= 0.1


@pytest.mark.parametrize("arg", [None, "dataset=imagenet2012"])
def test_equal_flops_points_meet_their_budget(arg):
    config = load("equal_flops", arg)
    by_budget: dict = {}
    for p, cfg in sweep.expand(config):
        macs = sweep.describe_model(cfg.model)["macs"]
        assert macs == p.meta["solved_macs"]  # the point's overrides rebuild the solved network
        assert abs(macs / p.meta["target_macs"] - 1) <= 0.03, (p.name, macs, p.meta["target_macs"])
        by_budget.setdefault(p.meta["target_macs"], set()).add(p.strategy)
    assert all(s == {"depth", "width", "resolution", "compound"} for s in by_budget.values())


def test_equal_flops_solutions_hold_under_xla_count():
    """XLA's own FLOP count of each solved network: 0-10% above 2 x the solved MACs, so near 2 x the budget."""
    config = load("equal_flops", "budgets=3.8")
    base_scale = {"width": 1.0, "depth": 1.0, "resolution": config.model.resolution}
    points = sweep.expand(config)
    assert {p.strategy for p, _ in points} == {"depth", "width", "resolution", "compound"}
    for p, cfg in points:
        net = spec.build(cfg.model)
        flops = complexity.xla_flops(net)
        assert 1.0 <= flops / (2 * p.meta["solved_macs"]) <= 1.10, p.name
        assert 0.97 <= flops / (2 * p.meta["target_macs"]) <= 1.10 * 1.03, p.name
        scaled = {k for k, v in base_scale.items() if getattr(net, k) != v}
        expected = {"width", "depth", "resolution"} if p.strategy == "compound" else {p.strategy}
        assert scaled == expected, (p.name, scaled)


def test_reproduce_has_one_base_and_an_equal_budget_point_per_strategy():
    config = load("reproduce", "budget=4,epochs=0.5")
    assert config.train.num_epochs == 0.5
    pairs = sweep.expand(config)
    base_macs = [sweep.describe_model(c.model)["macs"] for p, c in pairs if p.strategy == "base"]
    assert len(base_macs) == 1
    budget = {}
    for p, cfg in pairs:
        macs = sweep.describe_model(cfg.model)["macs"]
        if "target_macs" in p.meta:
            assert p.meta["target_macs"] == pytest.approx(4 * base_macs[0], rel=1e-6)
            assert abs(macs / p.meta["target_macs"] - 1) <= 0.06, (p.name, macs)
            budget[p.strategy] = p.name
        if p.strategy == "resolution":  # one dimension at a time: the others stay at the base
            assert sweep.describe_model(cfg.model)["width"] == 1.0
    assert set(budget) == {"width", "depth", "resolution", "compound"}
    # Each strategy's points are in MACs order, so that a line is drawn from the base outwards.
    for strategy in budget:
        macs = [sweep.describe_model(c.model)["macs"] for p, c in pairs if p.strategy == strategy]
        assert macs == sorted(macs) and macs[0] > base_macs[0]


def test_bisect_multiplier_keeps_the_closer_step():
    steps = lambda m: int(m * 10) * 100  # noqa: E731 - a step function: 100 per 0.1
    m, macs = sweep.bisect_multiplier(steps, 1234, 1.0, 2.0)
    assert macs == 1200 and 1.2 <= m < 1.3 and m == 1.2  # the fewest-decimals multiplier of that step
    m, macs = sweep.bisect_multiplier(steps, 1290, 1.0, 2.0)
    assert macs == 1300
    m, macs = sweep.bisect_multiplier(steps, 5000, 1.0, 1.5)  # hi grows until it reaches the target
    assert macs == 5000


def test_overrides_must_name_existing_fields():
    c = base.get_config()
    with pytest.raises(KeyError, match="no such config field"):
        sweep.apply_overrides(c, {"model.widht": 2.0})
    with pytest.raises(KeyError, match="no field 'modle'"):
        sweep.apply_overrides(c, {"modle.width": 2.0})
    with pytest.raises(TypeError, match="model.resolution"):
        sweep.apply_overrides(c, {"model.resolution": "large"})
    out = sweep.apply_overrides(c, {"model.width": 2.0, "train.num_epochs": 1.0})
    assert out.model.width == 2.0 and c.model.width is None  # the base is not modified


def test_point_names_are_checked():
    with pytest.raises(ValueError, match="twice"):
        sweep.block("x", [sweep.point("a", "width", {}), sweep.point("a", "depth", {})])
    with pytest.raises(ValueError, match="must match"):
        sweep.block("x", [sweep.point("a/b", "width", {})])


def test_command_line_overrides_apply_to_every_point_but_points_win():
    config = load("width")
    config.train.num_epochs = 0.25  # what --config.train.num_epochs=0.25 does
    config.model.width = 9.0  # --config.model.width=9: every point sets width, so points win
    for p, cfg in sweep.expand(config):
        assert cfg.train.num_epochs == 0.25
        assert cfg.model.width == p.overrides["model.width"]


# ----------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("n", range(1, 8))
def test_shards_are_disjoint_and_complete(n):
    names = [p.name for p in sweep.points_of(load("abg_grid"))]
    shares = [sweep.share(names, i, n) for i in range(n)]
    flat = [x for s in shares for x in s]
    assert sorted(flat) == sorted(names) and len(flat) == len(set(flat))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert all(sweep.shard_of(names.index(x), n) == i for i, s in enumerate(shares) for x in s)


def test_run_skips_finished_points(tmp_path):
    calls: list = []
    out = sweep.run(tiny_sweep(), tmp_path, fake_run(calls), log=lambda s: None)
    assert out == {"w0": "done", "w1": "done", "w2": "done"} and calls == ["w0", "w1", "w2"]
    for name in calls:
        point = json.loads((tmp_path / name / "point.json").read_text())
        assert point["strategy"] == "width" and point["describe"]["macs"] > 0 and point["config"]["model"]
        assert json.loads((tmp_path / name / "result.json").read_text())["eval_top1"] > 0.5
    calls.clear()
    out = sweep.run(tiny_sweep(), tmp_path, fake_run(calls), log=lambda s: None)
    assert calls == [] and set(out.values()) == {"skipped"}


def test_run_records_failures_goes_on_and_retries(tmp_path):
    calls: list = []
    out = sweep.run(tiny_sweep(), tmp_path, fake_run(calls, fail={"w1"}), log=lambda s: None)
    assert out == {"w0": "done", "w1": "failed", "w2": "done"}
    error = json.loads((tmp_path / "w1" / "error.json").read_text())
    assert error["type"] == "RuntimeError" and "boom in w1" in error["message"] and "Traceback" in error["traceback"]
    assert error["attempts"] == 1 and not (tmp_path / "w1" / "result.json").exists()
    sweep.run(tiny_sweep(), tmp_path, fake_run(calls, fail={"w1"}), log=lambda s: None)
    assert json.loads((tmp_path / "w1" / "error.json").read_text())["attempts"] == 2
    calls.clear()
    out = sweep.run(tiny_sweep(), tmp_path, fake_run(calls), log=lambda s: None)
    assert calls == ["w1"] and out["w1"] == "done"
    assert not (tmp_path / "w1" / "error.json").exists() and (tmp_path / "w1" / "result.json").exists()


def test_a_stop_request_ends_the_sweep_without_a_failure(tmp_path):
    class Stopped(Exception):
        pass

    def run_fn(config, workdir):
        (Path(workdir) / "checkpoint_5").mkdir()
        raise Stopped

    with pytest.raises(Stopped):
        sweep.run(tiny_sweep(), tmp_path, run_fn, log=lambda s: None, stop_on=(Stopped,))
    assert results.point_state(tmp_path / "w0") == "partial" and not (tmp_path / "w1").exists()


def test_run_only_its_shard_and_only_process_0_writes(tmp_path):
    calls: list = []
    sweep.run(tiny_sweep(5), tmp_path, fake_run(calls), shard=(1, 2), log=lambda s: None)
    assert calls == ["w1", "w3"]
    other = tmp_path / "other"
    sweep.run(tiny_sweep(2), other, lambda c, w: None, is_main=False, log=lambda s: None)
    assert not other.exists() or not any(other.rglob("*.json"))


def test_a_point_whose_model_changed_is_not_resumed(tmp_path):
    sweep.run(tiny_sweep(1), tmp_path, fake_run([], fail={"w0"}), log=lambda s: None)
    (tmp_path / "w0" / "checkpoint_1").mkdir()
    changed = base.get_config()
    changed.sweep = sweep.block("tiny", [sweep.point("w0", "width", {"model.width": 3.0})])
    calls: list = []
    out = sweep.run(changed, tmp_path, fake_run(calls), log=lambda s: None)
    assert out == {"w0": "failed"} and calls == []
    assert "different model" in json.loads((tmp_path / "w0" / "error.json").read_text())["message"]


def test_status_reports_every_state(tmp_path):
    config = tiny_sweep(4)
    sweep.run(config, tmp_path, fake_run([], fail={"w1"}), shard=(0, 2), log=lambda s: None)  # w0 done, w2 done
    (tmp_path / "w3").mkdir()
    (tmp_path / "w3" / "metrics.jsonl").write_text('{"step": 1}\n')
    (tmp_path / "w2" / "result.json").unlink()
    (tmp_path / "w2" / "error.json").write_text(json.dumps({"type": "ValueError", "message": "bad", "attempts": 2}))
    rows = sweep.status(config, tmp_path, num_shards=2)
    assert [r["state"] for r in rows] == ["done", "pending", "failed", "partial"]
    assert rows[0]["top1"] == pytest.approx(0.6) and all(r["macs"] > 0 and r["params"] > 0 for r in rows)
    assert [r["shard"] for r in rows] == [0, 1, 0, 1]
    text = sweep.format_status(rows, "tiny")
    assert "60.00" in text and "ValueError: bad (attempt 2)" in text
    assert "1 done, 1 failed, 1 partial, 1 pending" in text


def test_main_modes(tmp_path, capsys):
    config = tiny_sweep(3)
    assert sweep.main(config, str(tmp_path), "train", "0/1", run_fn=fake_run([], fail={"w2"})) == 1
    assert sweep.main(config, str(tmp_path), "status") == 0
    assert "2 done, 1 failed" in capsys.readouterr().out
    assert sweep.main(config, str(tmp_path), "collect") == 0
    rows = results.read_table(tmp_path / "results.csv")
    assert [r["status"] for r in rows] == ["done", "done", "failed"]
    assert len(results.read_table(tmp_path / "results.jsonl")) == 3
    assert sweep.main(config, str(tmp_path), "eval") == 2
    assert sweep.main(config, "", "status") == 2
    capsys.readouterr()
    assert sweep.main(config, "", "info", "1/2") == 0
    out = capsys.readouterr().out
    assert "sweep tiny: 3 points" in out and "w1 " in out and "model.width=1.25" in out and "shard  1" in out


# ----------------------------------------------------------------------------- a killed driver

_DRIVER = textwrap.dedent(
    """
    import dataclasses, json, time
    from pathlib import Path
    from configs.sweeps import base
    from effscale import record, results, sweep

    LOG = Path({log!r})

    def slow_run(config, workdir):
        # A fake trainer: 10 steps, a checkpoint after each, resume from the latest.
        ckpt = Path(workdir) / "ckpt.json"
        start = (results.read_json(ckpt) or {{}}).get("step", 0)
        with LOG.open("a") as f:
            f.write(json.dumps({{"point": Path(workdir).name, "from": start}}) + "\\n")
        for step in range(start + 1, 11):
            time.sleep(0.1)
            record.write_json(ckpt, {{"step": step}})
        run = dataclasses.replace(record.read_record({example!r}), eval_top1=0.9, resumed_from_step=start)
        record.write_record(Path(workdir) / "result.json", run)
        return None

    c = base.get_config()
    c.sweep = sweep.block("killed", [sweep.point(f"p{{k}}", "width", {{"model.width": 1.0 + k}}) for k in range(3)])
    sweep.run(c, {workdir!r}, slow_run)
    """
)


def test_a_killed_driver_loses_and_duplicates_nothing(tmp_path):
    workdir, log = tmp_path / "sweep", tmp_path / "starts.jsonl"
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER.format(example=str(V0_EXAMPLE), log=str(log), workdir=str(workdir)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        while (results.read_json(workdir / "p1" / "ckpt.json") or {}).get("step", 0) < 3:
            assert proc.poll() is None and time.time() < deadline, "driver ended or stalled before p1 step 3"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first = workdir / "p0" / "result.json"
    before = (first.read_bytes(), first.stat().st_mtime_ns)
    assert not (workdir / "p1" / "result.json").exists()
    subprocess.run([sys.executable, str(script)], check=True, stdout=subprocess.DEVNULL, timeout=120)
    assert (first.read_bytes(), first.stat().st_mtime_ns) == before
    starts = [json.loads(line) for line in log.read_text().splitlines()]
    assert [s["point"] for s in starts] == ["p0", "p1", "p1", "p2"]
    assert starts[2]["from"] >= 3  # p1 resumed from its checkpoint
    rows = results.collect(workdir)
    assert sorted(r["point"] for r in rows) == ["p0", "p1", "p2"] and {r["status"] for r in rows} == {"done"}
    assert not list(workdir.rglob("*.tmp"))


# ----------------------------------------------------------------------------- the real trainer


@pytest.mark.slow
def test_a_tiny_real_sweep_end_to_end(tmp_path, capsys):
    """Two tiny networks through effscale.train, then status, collect and plot (Fashion-MNIST slices)."""
    pytest.importorskip("effscale.train")
    from train_support import tiny_config  # tests/ is on the path of pytest's default import mode

    config = tiny_config("fashion_mnist", steps=2)
    config.sweep = sweep.block(
        "tiny_real", [sweep.point(f"width-{w:g}", "width", {"model.width": w}) for w in (1.0, 1.5)]
    )
    workdir = str(tmp_path / "sweep")
    assert sweep.main(config, workdir, "train") == 0
    assert sweep.main(config, workdir, "train") == 0  # everything skipped
    assert sweep.main(config, workdir, "status") == 0
    out = capsys.readouterr().out
    assert out.count("done, skipped") == 2 and "2 done, 0 failed, 0 partial, 0 pending" in out
    assert sweep.main(config, workdir, "collect") == 0
    rows = results.read_table(Path(workdir) / "results.csv")
    assert [r["status"] for r in rows] == ["done", "done"]
    for r in rows:
        assert 0 <= r["top1"] <= 1 and 0 <= r["ema_top1"] <= 1 and r["train_images_per_sec"] > 0
        assert r["macs"] == json.loads((Path(workdir) / r["point"] / "result.json").read_text())["macs"]
    assert sweep.main(config, workdir, "plot") == 0
    assert (Path(workdir) / "figures" / "tiny_real_top1_vs_macs.png").stat().st_size > 1000


def test_a_stop_that_comes_as_a_point_finishes_ends_the_sweep_before_the_next(tmp_path):
    """The trainer's StopRequest takes a signal its run can no longer stop on (the last step, the record);
    it passes to the sweep driver's, which starts no other point and leaves the finished one done."""
    from effscale.training import errors, signals

    calls: list = []
    finish = fake_run(calls)
    before = signal.getsignal(signal.SIGTERM)

    def run_fn(config, workdir):
        with signals.StopRequest() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.time() + 5
            while stop.signum is None and time.time() < deadline:
                time.sleep(0.01)
            return finish(config, workdir)  # too late to stop: the run ends normally

    with pytest.raises(errors.SweepStopped, match="Stopped by SIGTERM between sweep points; finished points are in"):
        sweep.main(tiny_sweep(3), str(tmp_path), "train", "0/1", run_fn=run_fn)
    assert calls == ["w0"] and results.point_state(tmp_path / "w0") == "done"
    assert not (tmp_path / "w1").exists()
    assert signal.getsignal(signal.SIGTERM) == before
    calls.clear()
    assert sweep.main(tiny_sweep(3), str(tmp_path), "train", "0/1", run_fn=fake_run(calls)) == 0
    assert calls == ["w1", "w2"]  # the next call continues where the stop left it
