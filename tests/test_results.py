"""The run record, the results table: collecting point directories, CSV / JSONL round trips, atomic writes."""

import dataclasses
import json
from pathlib import Path

import pytest

from configs.sweeps import base
from effscale import record, results, sweep

ROOT = Path(__file__).resolve().parents[1]
# A result.json as effscale.train wrote it before records had a format version.
V0_EXAMPLE = ROOT / "tests" / "data" / "result_v0.json"

# A run record of the tree's finished point (the counts, with the dataset's real classes, win over point.json's).
TRAINER_RESULT = dataclasses.replace(
    record.read_record(V0_EXAMPLE),
    eval_top1=0.91,
    eval_top5=0.998,
    eval_top1_ema=0.915,
    eval_top5_ema=0.999,
    best_eval_top1=0.917,
    train_images_per_sec=312.5,
    step_time_s=0.4096,
    wall_time_s=400.0,
    params=123_456,
    macs=7_654_321,
    activations=54_321,
    xla_flops=2.1e7,
)


def test_a_version_0_result_reads_with_every_value_as_written():
    written = json.loads(V0_EXAMPLE.read_text())
    assert "format_version" not in written
    run = record.read_record(V0_EXAMPLE)
    assert run.format_version == record.FORMAT_VERSION
    back = run.to_json()
    assert {k: back[k] for k in written} == written and back["format_version"] == record.FORMAT_VERSION
    assert all(back[k] is None for k in set(back) - set(written) - {"format_version"})  # fields added since: unset
    assert (run.eval_top1, run.eval_top1_ema, run.macs, run.config["model"]["phi"]) == (0.6846, 0.6933, 56426928, 2.0)


def test_a_record_round_trips_through_its_file(tmp_path):
    run = dataclasses.replace(record.read_record(V0_EXAMPLE), status="evaluated", xla_flops=None, phi=None)
    record.write_record(tmp_path / record.EVAL, run)
    assert json.loads((tmp_path / record.EVAL).read_text())["format_version"] == record.FORMAT_VERSION
    assert record.read_record(tmp_path / record.EVAL) == run


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"eval_top1": None}, "missing fields eval_top1"),
        ({"eval_top1": 91.0}, "a fraction in"),
        ({"macs": "56M"}, "macs must be a number"),
        ({"status": "running"}, "status must be one of"),
        ({"format_version": record.FORMAT_VERSION + 1}, "upgrade effscale"),
    ],
)
def test_a_damaged_record_names_its_problem(change, problem):
    with pytest.raises(record.RecordError, match=problem):
        record.RunRecord.from_json({**json.loads(V0_EXAMPLE.read_text()), **change})


def make_tree(tmp_path: Path):
    """A sweep workdir with a done, a partial and a failed point, and one never started."""
    c = base.get_config()
    c.sweep = sweep.block(
        "tree",
        [
            sweep.point("done", "width", {"model.width": 1.5}),
            sweep.point("partial", "depth", {"model.depth": 2.0}),
            sweep.point("failed", "resolution", {"model.resolution": 48}, target_macs=123),
            sweep.point("pending", "compound", {"model.phi": 1.0}),
        ],
    )

    def run_fn(config, workdir):
        name = Path(workdir).name
        if name == "done":
            return TRAINER_RESULT
        if name == "partial":
            (Path(workdir) / "checkpoints" / "200").mkdir(parents=True)
            (Path(workdir) / "metrics.jsonl").write_text('{"step": 200}\n')
            raise KeyboardInterrupt  # the driver is stopped during this point
        raise ValueError("diverged")

    with pytest.raises(KeyboardInterrupt):
        sweep.run(c, tmp_path, run_fn, log=lambda s: None)
    # Run the rest of the sweep without the interrupted point.
    sweep.run(c, tmp_path, run_fn, shard=(0, 2), log=lambda s: None)  # done (skipped), failed
    return c


def test_collect_a_tree_with_done_partial_failed_and_pending(tmp_path):
    config = make_tree(tmp_path)
    rows = {r["point"]: r for r in results.collect(tmp_path, sweep.pending_records(config))}
    assert {n: r["status"] for n, r in rows.items()} == {
        "done": "done",
        "partial": "partial",
        "failed": "failed",
        "pending": "pending",
    }
    done = rows["done"]
    assert done["sweep"] == "tree" and done["strategy"] == "width" and done["series"] == "width"
    assert done["width"] == 1.5 and done["depth"] == 1.0 and done["resolution"] == 32
    assert done["top1"] == 0.91 and done["top5"] == 0.998 and done["ema_top1"] == 0.915
    assert done["best_top1"] == 0.917 and done["train_images_per_sec"] == 312.5 and done["train_step_time_s"] == 0.4096
    assert done["wall_time_s"] == 400.0 and done["xla_flops"] == 2.1e7
    assert done["macs"] == 7_654_321 and done["params"] == 123_456 and done["activations"] == 54_321
    assert rows["partial"]["macs"] > 1e6 and rows["partial"]["params"] > 1e5  # analytic, from point.json
    assert json.loads(done["overrides"]) == {"model.width": 1.5}
    assert rows["failed"]["error"] == "ValueError: diverged" and rows["failed"]["target_macs"] == 123
    assert rows["failed"]["macs"] > 0 and rows["failed"]["top1"] is None
    assert rows["partial"]["strategy"] == "depth" and rows["partial"]["depth"] == 2.0
    assert rows["pending"]["phi"] == 1.0 and rows["pending"]["macs"] > 0


def test_table_files_round_trip_and_are_written_atomically(tmp_path):
    make_tree(tmp_path / "sweep")
    rows = results.collect(tmp_path / "sweep")
    csv_path, jsonl_path = results.write_table(rows, tmp_path / "out" / "table")
    assert csv_path.name == "table.csv" and jsonl_path.name == "table.jsonl"
    header = csv_path.read_text().splitlines()[0].split(",")
    assert header[: len(results.COLUMNS)] == list(results.COLUMNS) and "target_macs" in header
    for path in (csv_path, jsonl_path):
        back = {r["point"]: r for r in results.read_table(path)}
        assert set(back) == {"done", "partial", "failed"}
        assert back["done"]["top1"] == 0.91 and back["done"]["resolution"] == 32
        assert back["failed"]["top1"] is None and back["failed"]["target_macs"] == 123
    assert [p.name for p in (tmp_path / "out").iterdir()] and not list((tmp_path / "out").glob(".*"))
    assert {r["point"] for r in results.read_table(tmp_path / "sweep")} == {"done", "partial", "failed"}


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    path = tmp_path / "x.json"
    record.write_json(path, {"a": 1})

    class Unprintable:
        def __str__(self):
            raise RuntimeError("cannot serialise")

    with pytest.raises(RuntimeError):
        record.write_json(path, {"a": Unprintable()})
    assert json.loads(path.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_a_plain_run_reads_its_version_0_record(tmp_path):
    run = tmp_path / "runs" / "phi2"
    run.mkdir(parents=True)
    (run / "result.json").write_bytes(V0_EXAMPLE.read_bytes())
    (run / "checkpoints" / "point.json").parent.mkdir()  # inside a point: not searched
    (run / "checkpoints" / "point.json").write_text("{}")
    rows = results.collect(tmp_path)
    assert len(rows) == 1
    row = rows[0]
    assert row["strategy"] == "run" and row["point"] == "phi2" and row["status"] == "done"
    assert (row["top1"], row["top5"], row["ema_top1"], row["ema_top5"], row["best_top1"]) == (
        0.6846,
        0.9793,
        0.6933,
        0.985,
        0.6933,
    )
    assert (row["macs"], row["params"], row["activations"], row["xla_flops"]) == (56426928, 10717938, 627634, 114129592)
    assert (row["width"], row["depth"], row["resolution"], row["phi"]) == (1.2100000000000002, 1.44, 44, 2.0)
    assert row["train_step_time_s"] == 0.3949246993061221 and row["wall_time_s"] == 145.77916656100004


def test_every_result_column_is_a_record_field():
    fields = {f.name for f in dataclasses.fields(record.RunRecord)}
    assert set(results.RESULT_COLUMNS.values()) <= fields
    assert set(results.RESULT_COLUMNS) <= set(results.COLUMNS)


def test_a_damaged_record_is_reported_and_left_out_of_the_table(tmp_path):
    config = make_tree(tmp_path)
    (tmp_path / "done" / "result.json").write_text('{"eval_top1": 0.9')  # cut short
    rows = {r["point"]: r for r in sweep.status(config, tmp_path)}
    assert rows["done"]["state"] == "damaged" and "not valid JSON" in rows["done"]["error"]
    assert "0 done, 1 damaged, 1 failed" in sweep.format_status(list(rows.values()))
    with pytest.warns(UserWarning, match="left out of the table: .*done.result.json: not valid JSON"):
        table = results.collect(tmp_path, sweep.pending_records(config))
    assert {r["point"] for r in table} == {"partial", "failed", "pending"}
    # The sweep keeps the damaged record aside and reruns the point (the trainer resumes from its checkpoint).
    logged: list = []
    rerun = record.read_record(V0_EXAMPLE)
    assert sweep.run(config, tmp_path, lambda c, w: rerun, shard=(0, 4), log=logged.append) == {"done": "done"}
    assert "DAMAGED record" in logged[1] and "rerunning from its checkpoint" in logged[1]
    (aside,) = (tmp_path / "done").glob("result.json.damaged-*")
    assert aside.read_text() == '{"eval_top1": 0.9'
    assert record.read_record(tmp_path / "done" / "result.json") == rerun


def test_point_state(tmp_path):
    assert results.point_state(tmp_path / "missing") == "pending"
    (tmp_path / "point.json").write_text("{}")
    assert results.point_state(tmp_path) == "pending"
    (tmp_path / ".point.json.abc.tmp").write_text("")  # a write cut short: not progress
    assert results.point_state(tmp_path) == "pending"
    (tmp_path / "metrics.jsonl").write_text("")
    assert results.point_state(tmp_path) == "partial"
    (tmp_path / "error.json").write_text("{}")
    assert results.point_state(tmp_path) == "failed"
    (tmp_path / "result.json").write_text("{}")
    assert results.point_state(tmp_path) == "damaged"
    (tmp_path / "result.json").write_bytes(V0_EXAMPLE.read_bytes())
    assert results.point_state(tmp_path) == "done"


def test_committed_reproduction_is_complete_and_matches_its_config():
    """experiments/results/ holds every point of configs/sweeps/reproduce.py, finished, with today's MACs."""
    from configs.sweeps import reproduce

    rows = {r["point"]: r for r in results.read_table(ROOT / "experiments" / "results" / "scaling.csv")}
    pairs = sweep.expand(reproduce.get_config())
    assert set(rows) == {p.name for p, _ in pairs}
    for p, cfg in pairs:
        r = rows[p.name]
        assert r["status"] == "done" and r["strategy"] == p.strategy, p.name
        assert r["macs"] == sweep.describe_model(cfg.model)["macs"], p.name  # the network did not drift
        assert 0.1 < r["top1"] <= 1 and 0.1 < r["ema_top1"] <= 1 and r["train_images_per_sec"] > 0
    figures = ROOT / "experiments" / "results" / "figures"
    for name in ("top1_vs_macs", "top1_vs_macs_panels", "equal_flops", "pareto", "time_vs_macs"):
        assert (figures / f"reproduce_{name}.png").stat().st_size > 1000, name


# ----------------------------------------------------------------------------- new columns, seeds, the grouped table


def _point(workdir: Path, name: str, meta: dict, written: dict) -> None:
    """A finished point directory written by hand: point.json and result.json."""
    d = workdir / name
    d.mkdir(parents=True)
    labels = {"sweep": "s", "name": name, "strategy": "width", "series": "width", "overrides": {}, "meta": meta}
    (d / "point.json").write_text(json.dumps(labels))
    (d / "result.json").write_text(json.dumps(written))


def _written(seed: int = 0, **changes) -> dict:
    """The version-0 example record, trained with `seed`, with `changes`."""
    written = json.loads(V0_EXAMPLE.read_text())
    written["config"]["train"]["seed"] = seed
    return {**written, **changes}


def test_rows_carry_the_run_the_device_and_the_held_out_splits(tmp_path):
    new = _written(
        7, val_top1=0.70, test_top1=0.6846, test_top1_ema=0.6933, test_top1_best=0.69, input_wait_fraction=0.25,
        peak_memory_bytes=123_456_789, peak_host_memory_bytes=2_000_000_000,
    )  # fmt: skip
    _point(tmp_path, "new", {"seed": 7, "network": "w1"}, new)
    _point(tmp_path, "old", {}, _written(peak_bytes_in_use=5))  # no val/test fields: an older record
    rows = {r["point"]: r for r in results.collect(tmp_path)}
    r = rows["new"]
    assert (r["network"], r["seed"], r["dataset"]) == ("w1", 7, "fashion_mnist")
    assert (r["epochs"], r["steps"], r["batch_size"], r["steps_per_epoch"]) == (0.05336179295624333, 50, 64, 937)
    assert (r["train_loss"], r["train_accuracy"]) == (1.830838918685913, 0.38807398080825806)
    assert (r["device_kind"], r["device_count"], r["compile_time_s"]) == ("cpu", 1, 31.088596069999994)
    assert (r["val_top1"], r["test_top1"], r["test_top1_ema"], r["test_top1_best"]) == (0.70, 0.6846, 0.6933, 0.69)
    assert (r["input_wait_fraction"], r["peak_memory_bytes"]) == (0.25, 123_456_789)
    assert r["peak_host_memory_bytes"] == 2_000_000_000 and rows["old"]["peak_host_memory_bytes"] is None
    old = rows["old"]
    assert (old["network"], old["seed"], old["peak_memory_bytes"]) == ("old", 0, 5)  # seed from the record's config
    assert old["val_top1"] is None and old["test_top1_best"] is None


def test_the_grouped_table_summarises_each_network_over_its_seeds(tmp_path):
    top1 = {0: 0.80, 1: 0.83, 2: 0.86}
    for seed, value in top1.items():
        _point(tmp_path, f"w1_s{seed}", {"seed": seed, "network": "w1"}, _written(seed, eval_top1=value))
    # The record says what was trained: a point.json whose label disagrees does not change the seed.
    _point(tmp_path, "mislabelled", {"seed": 5}, _written(3))
    _point(tmp_path, "w2", {"seed": 0, "network": "w2"}, _written(eval_top1=0.9, macs=2))
    rows = results.collect(tmp_path)
    groups = {g["network"]: g for g in results.group(rows)}
    w1 = groups["w1"]
    assert (w1["runs"], w1["seeds"], w1["top1_n"]) == (3, "0/1/2", 3)
    # By hand: mean 0.83, std 0.03, half-width t(0.975, 2) * 0.03 / sqrt(3) = 4.302653 * 0.0173205.
    assert w1["top1_mean"] == pytest.approx(0.83) and w1["top1_std"] == pytest.approx(0.03)
    assert (w1["top1_ci_lo"], w1["top1_ci_hi"]) == pytest.approx((0.83 - 0.0745241, 0.83 + 0.0745241), abs=1e-6)
    assert w1["ema_top1_std"] == pytest.approx(0.0, abs=1e-12)  # identical runs: no spread
    assert w1["ema_top1_ci_lo"] == pytest.approx(0.6933)
    w2 = groups["w2"]
    assert (w2["top1_mean"], w2["top1_n"], w2["top1_std"], w2["top1_ci_lo"]) == (0.9, 1, None, None)
    assert "val_top1_mean" not in w1  # no run has it
    assert groups["mislabelled"]["seeds"] == "3"
    path = results.write_grouped(rows, tmp_path / "results_grouped.csv")
    back = {r["network"]: r for r in results.read_table(path)}
    assert back["w1"]["top1_ci_hi"] == pytest.approx(w1["top1_ci_hi"]) and back["w2"]["top1_ci_lo"] is None


def test_each_repeat_the_cache_served_reports_the_compile_seconds_it_saved(tmp_path):
    # w1: two cold compiles (20 s, 24 s: median 22 s), a repeat served by the cache in 6 s saved 16 s.
    # w2 never compiled cold: nothing to compare with.
    for seed, (hits, seconds) in enumerate(((0, 20.0), (0, 24.0), (3, 6.0))):
        written = _written(seed, compile_cache_hits=hits, compile_time_s=seconds)
        _point(tmp_path, f"w1_s{seed}", {"seed": seed, "network": "w1"}, written)
    _point(tmp_path, "w2", {"network": "w2"}, _written(compile_cache_hits=2, compile_time_s=5.0))
    rows = {r["point"]: r for r in results.collect(tmp_path)}
    saved = {name: r["compile_saved_s"] for name, r in rows.items()}
    assert saved == {"w1_s0": None, "w1_s1": None, "w1_s2": pytest.approx(16.0), "w2": None}
    (w1,) = (g for g in results.group(list(rows.values())) if g["network"] == "w1")
    assert (w1["compile_saved_s_mean"], w1["compile_saved_s_n"]) == (pytest.approx(16.0), 1)


def test_collect_writes_the_grouped_table_next_to_the_runs(tmp_path, capsys):
    c = base.get_config()
    c.sweep = sweep.block("s", base.with_seeds([sweep.point("w1", "width", {"model.width": 1.0})], (0, 1)))

    def run_fn(cfg, workdir):  # the trainer records its config: the seed the point set
        top1 = {0: 0.8, 1: 0.9}[cfg.train.seed]
        return dataclasses.replace(record.read_record(V0_EXAMPLE), eval_top1=top1, config=sweep.config_json(cfg))

    assert sweep.run(c, tmp_path, run_fn, log=lambda s: None) == {"w1": "done", "w1_s1": "done"}
    assert sweep.main(c, str(tmp_path), "collect") == 0
    assert "1 networks (mean, std, n, 95% interval over seeds)" in capsys.readouterr().out
    assert [(r["point"], r["seed"]) for r in results.read_table(tmp_path / "results.csv")] == [("w1", 0), ("w1_s1", 1)]
    (g,) = results.read_table(tmp_path / "results_grouped.csv")
    assert (g["network"], g["runs"], g["seeds"], g["top1_mean"]) == ("w1", 2, "0/1", pytest.approx(0.85))
    assert g["top1_ci_hi"] - g["top1_mean"] == pytest.approx(12.706205 * 0.1 / 2, abs=1e-5)  # t(0.975, 1) * s / sqrt 2
