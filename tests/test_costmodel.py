"""The cost model: seconds per image from MACs and activations, per device, on data where the truth is known."""

import dataclasses
import json
from pathlib import Path

import ml_collections
import pytest

from configs.sweeps import base
from effscale import costmodel, record, sweep

ROOT = Path(__file__).resolve().parents[1]
V0_EXAMPLE = ROOT / "tests" / "data" / "result_v0.json"

K1, K2, C = 2e-9, 3e-8, 1e-3  # the truth: seconds per image = K1 * MACs + K2 * activations + C


def truth(macs, acts, k1=K1, k2=K2, c=C):
    return k1 * macs + k2 * acts + c


def row(point, macs, acts, seconds, device="cpu", count=1, **extra):
    return {
        "point": point,
        "status": "done",
        "macs": macs,
        "activations": acts,
        "train_images_per_sec": 1.0 / seconds,
        "device_kind": device,
        "device_count": count,
        **extra,
    }


# Counts that do not lie on one line (width scaling alone would make MACs and activations collinear).
COUNTS = [(1e7, 1e5), (2e7, 3e5), (3e7, 1e5), (5e7, 6e5), (8e7, 2e5)]


def test_the_fit_recovers_the_coefficients_of_exact_data():
    rows = [row(f"p{k}", m, a, truth(m, a)) for k, (m, a) in enumerate(COUNTS)]
    (fit,) = costmodel.fit(rows).values()
    assert (fit.device, fit.n) == ("cpu", 5)
    assert (fit.k1, fit.k2, fit.c) == pytest.approx((K1, K2, C), rel=1e-6)
    assert fit.seconds_per_image(4e7, 5e5) == pytest.approx(truth(4e7, 5e5), rel=1e-9)
    assert costmodel.fit(rows[:2]) == {}  # three coefficients need three points


def test_leave_one_out_error_of_a_slow_point_is_what_the_others_predict():
    rows = [row(f"p{k}", m, a, truth(m, a)) for k, (m, a) in enumerate(COUNTS)]
    rows[3]["train_images_per_sec"] /= 1.25  # p3 measured 25% slower than the model of the others
    (points,) = costmodel.samples(rows).values()
    errors = costmodel.leave_one_out("cpu", points)
    # Without p3 the other four are exact: p3 is predicted at the truth, 1 / 1.25 of what it measured.
    assert errors["p3"] == pytest.approx(1 / 1.25 - 1)
    assert set(errors) == {"p0", "p1", "p2", "p3", "p4"} and abs(errors["p0"]) > 1e-3  # p3 spoils the others' fits
    assert costmodel.leave_one_out("cpu", points[:3]) == {}  # two points cannot refit three coefficients


def test_leave_one_out_leaves_out_every_seed_of_the_network():
    # p3 and its repeat both ran 25% slow: left out one run at a time, the repeat would pull the fit
    # toward p3 and hide the error a new network would see.
    rows = [row(f"p{k}", m, a, truth(m, a), network=f"p{k}") for k, (m, a) in enumerate(COUNTS)]
    rows.append(dict(rows[3], point="p3_s1"))
    for r in rows[3], rows[5]:
        r["train_images_per_sec"] /= 1.25
    (points,) = costmodel.samples(rows).values()
    errors = costmodel.leave_one_out("cpu", points)
    assert errors["p3"] == pytest.approx(1 / 1.25 - 1) and errors["p3_s1"] == pytest.approx(1 / 1.25 - 1)


def test_a_network_is_one_sample_the_median_of_its_runs():
    # Three seeds of each network; one seed of p1 ran 2x slow (a neighbour on its machine): the median
    # of its three is exact, so the fit is too. Seeds of one network are one point of the fit.
    rows = []
    for k, (m, a) in enumerate(COUNTS[:3]):
        for s in range(3):
            slow = 2.0 if (k, s) == (1, 2) else 1.0
            rows.append(row(f"p{k}_s{s}", m, a, slow * truth(m, a), network=f"p{k}"))
    (fit,) = costmodel.fit(rows).values()
    assert fit.n == 3
    assert (fit.k1, fit.k2, fit.c) == pytest.approx((K1, K2, C), rel=1e-6)
    one_network = [row(f"p_s{s}", *COUNTS[0], truth(*COUNTS[0]) * (1 + s / 10), network="p") for s in range(5)]
    assert costmodel.fit(one_network) == {}  # five runs, one network: nothing to fit three coefficients on


def test_repeat_spread_is_each_runs_distance_from_its_networks_median():
    rows = [row(f"a_s{s}", 1e7, 1e5, t, network="a") for s, t in enumerate((0.010, 0.012, 0.015))]
    rows += [row("b", 2e7, 2e5, 0.02, network="b")]  # run once: no spread to measure
    (points,) = costmodel.samples(rows).values()
    assert sorted(costmodel.repeat_spread(points)) == pytest.approx([0.010 / 0.012 - 1, 0.0, 0.015 / 0.012 - 1])


def test_overhead_is_the_median_share_of_wall_time_beyond_training():
    # 100 steps of 64 images at 0.01 s per image: 64 s of training.
    runs = [
        row(f"p{k}", 1e7, 1e5, 0.01, steps=100, batch_size=64, wall_time_s=64 * f) for k, f in enumerate((1.2, 1.3))
    ]
    runs.append(row("p2", 1e7, 1e5, 0.01, steps=100, batch_size=64, wall_time_s=128.0))
    assert costmodel.training_seconds(runs[0]) == pytest.approx(64.0)
    assert costmodel.overhead(runs) == pytest.approx(0.3)
    assert costmodel.overhead([dict(runs[0], wall_time_s=32.0)]) == 0.0  # never below nothing
    assert costmodel.overhead([dict(runs[0], wall_time_s=None)]) is None


def test_one_fit_per_device_kind_and_count():
    rows = [row(f"c{k}", m, a, truth(m, a)) for k, (m, a) in enumerate(COUNTS[:3])]
    rows += [row(f"g{k}", m, a, truth(m, a, 1e-11, 1e-10, 1e-4), device="H200") for k, (m, a) in enumerate(COUNTS)]
    rows += [row(f"h{k}", m, a, 0.1, device="H200", count=8) for k, (m, a) in enumerate(COUNTS[:2])]
    rows.append({**row("failed", 1e7, 1e5, 1.0), "status": "failed"})
    fits = costmodel.fit(rows)
    assert set(fits) == {"cpu", "H200"}  # 'H200 x8' has two points: no fit
    assert (fits["H200"].k1, fits["H200"].k2, fits["H200"].c) == pytest.approx((1e-11, 1e-10, 1e-4), rel=1e-6)
    assert costmodel.device_of(rows[-2]) == "H200 x8" and costmodel.device_of({"device_kind": None}) is None


def test_machine_speed_is_a_probe_over_what_the_fit_predicts_for_its_network():
    runs = [row(f"p{k}", m, a, truth(m, a)) for k, (m, a) in enumerate(COUNTS)]
    runs.append({**row("failed", 4e7, 2e5, 1.0), "status": "failed"})
    probe = row("probe", 4e7, 2e5, 2 * truth(4e7, 2e5))  # a network no run had, on a machine twice as slow
    assert costmodel.machine_speed(runs, probe) == pytest.approx(2.0)
    assert costmodel.machine_speed(runs, row("probe", 4e7, 2e5, 0.01, device="TPU v5")) is None  # no fit there
    assert costmodel.machine_speed(runs[:2], probe) is None  # two networks: no fit
    assert costmodel.machine_speed(runs, {**probe, "train_images_per_sec": None}) is None


def test_a_machine_speed_scales_every_prediction():
    finished = [row(f"p{k}", m, a, truth(m, a), steps=10, batch_size=10) for k, (m, a) in enumerate(COUNTS)]
    pending = [{"point": "new", "state": "pending", "macs": 4e7, "activations": 2e5}]
    train = ml_collections.ConfigDict({"num_steps": 100, "batch_size": 64, "num_epochs": None})
    usual = costmodel.annotate(pending, finished, [train], ["d"])[0]
    assert usual["predicted_s"] == pytest.approx(6400 * truth(4e7, 2e5))
    slow = costmodel.annotate(pending, finished, [train], ["d"], speed=1.5)[0]
    assert slow["predicted_s"] == pytest.approx(1.5 * usual["predicted_s"])
    assert slow["cost_basis"] == "cpu, 5 networks, machine x1.50" and usual["cost_basis"] == "cpu, 5 networks"


def test_seconds_per_image_and_images_of_a_run():
    assert costmodel.seconds_per_image({"train_images_per_sec": 250.0}) == 0.004
    assert costmodel.seconds_per_image({"train_step_time_s": 0.32, "batch_size": 64}) == 0.005
    assert costmodel.seconds_per_image({"train_images_per_sec": 0, "batch_size": 64}) is None
    train = ml_collections.ConfigDict({"num_steps": None, "batch_size": 64, "num_epochs": 2.0})
    assert costmodel.images(train, 55_000) == 110_000.0
    train.num_steps = 100
    assert costmodel.images(train, None) == 6400
    train.num_steps, train.num_epochs = None, 1.0
    assert costmodel.images(train, None) is None
    assert [costmodel.duration(s) for s in (None, 42, 600, 36_000)] == ["-", "42 s", "10 min", "10.0 h"]


def _write_point(workdir, p, cfg, macs, acts, seconds, overhead=0.3):
    """A finished point as the trainer leaves it: point.json and a result.json written by hand, its wall
    time `overhead` beyond its training (the example record's 50 steps of 64)."""
    pdir = workdir / p.name
    pdir.mkdir(parents=True)
    (pdir / "point.json").write_text(json.dumps({"sweep": "tiny", **p.as_dict()}))
    run = dataclasses.replace(
        record.read_record(V0_EXAMPLE),
        macs=int(macs),
        activations=int(acts),
        train_images_per_sec=1.0 / seconds,
        wall_time_s=(1.0 + overhead) * 50 * 64 * seconds,
        steps_per_epoch=859,
        batch_size=64,
        config=sweep.config_json(cfg),
    )
    record.write_record(pdir / "result.json", run)


def test_status_predicts_the_unfinished_points_and_scores_the_finished(tmp_path):
    c = base.get_config()
    c.train.num_epochs = 2.0
    c.sweep = sweep.block("tiny", [sweep.point(f"w{k}", "width", {"model.width": 1.0 + k / 4}) for k in range(6)])
    expanded = sweep.expand(c)
    text = sweep.format_status(sweep.status(c, tmp_path))
    assert "no prediction yet (the cost model needs timed points of 3 networks)" in text
    for (p, cfg), (m, a) in zip(expanded[:4], COUNTS, strict=False):
        _write_point(tmp_path, p, cfg, m, a, truth(m, a))
    rows = {r["point"]: r for r in sweep.status(c, tmp_path)}
    configs = {p.name: cfg for p, cfg in expanded}
    for name in ("w4", "w5"):
        desc = sweep.describe_model(configs[name].model)
        images = 2.0 * 859 * 64  # epochs x the training examples the finished runs saw
        assert rows[name]["predicted_s"] == pytest.approx(images * truth(desc["macs"], desc["activations"]), rel=1e-6)
        assert rows[name]["cost_basis"] == "cpu, 4 networks"
        assert rows[name]["predicted_wall_s"] == pytest.approx(1.3 * rows[name]["predicted_s"])
    assert all(abs(rows[f"w{k}"]["cost_error"]) < 1e-6 for k in range(4))  # exact data: no error
    text = sweep.format_status(list(rows.values()), "tiny")
    total = rows["w4"]["predicted_s"] + rows["w5"]["predicted_s"]
    assert f"predicted wall time {costmodel.duration(1.3 * total)} for 2 of 2 unfinished points" in text
    assert f"(training {costmodel.duration(total)} by the cost model on cpu, 4 networks, plus 30% for" in text
    spent = sum(1.3 * 50 * 64 * truth(m, a) for m, a in COUNTS[:4])
    assert f"sweep total {costmodel.duration(1.3 * total + spent)};" in text
    assert f"finished points' wall time {costmodel.duration(spent)}" in text
    w0 = next(line for line in text.splitlines() if line.startswith("w0 "))
    assert w0.rstrip().endswith("+0%")
