"""Work stealing (sweep.run(claim=True), effscale.claims) with fake runs: worker processes, a worker killed
with kill -9, live and expired claims, failures, stops and points another driver's trainer holds."""

from __future__ import annotations

import dataclasses
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
from effscale import claims, lease, record, results, sweep

ROOT = Path(__file__).resolve().parents[1]
V0_EXAMPLE = ROOT / "tests" / "data" / "result_v0.json"


def tiny_sweep(n: int):
    """A sweep config of `n` width points (never trained: the run functions are fakes)."""
    c = base.get_config()
    c.sweep = sweep.block("tiny", [sweep.point(f"w{k}", "width", {"model.width": 1.0 + k / 4}) for k in range(n)])
    return c


def fake_run(calls: list, fail: frozenset = frozenset(), writer_lease: bool = False):
    """A run function that records its calls and writes result.json atomically (as the trainer does).

    With `writer_lease` it takes the point's writer.lease first, as the trainer does.
    """

    def run_fn(config, workdir):
        name = Path(workdir).name
        calls.append(name)
        with lease.hold_writer(workdir, enabled=writer_lease):
            if name in fail:
                raise RuntimeError(f"boom in {name}")
            top1 = 0.5 + config.model.width / 10
            run = dataclasses.replace(record.read_record(V0_EXAMPLE), eval_top1=top1, eval_top1_ema=top1)
            record.write_record(Path(workdir) / record.RESULT, run)

    return run_fn


def _claims_left(workdir: Path) -> list[str]:
    return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*claim.lease*"))


def test_a_lone_worker_runs_every_point_in_order_and_a_rerun_none(tmp_path):
    calls: list = []
    out = sweep.run(tiny_sweep(4), tmp_path, fake_run(calls), claim=True, ttl_s=5, log=lambda s: None)
    assert calls == ["w0", "w1", "w2", "w3"] and set(out.values()) == {"done"}
    assert _claims_left(tmp_path) == []
    assert all(results.point_state(tmp_path / n) == "done" for n in calls)
    calls.clear()
    assert sweep.run(tiny_sweep(4), tmp_path, fake_run(calls), claim=True, ttl_s=5, log=lambda s: None) == {}
    assert calls == []


def test_the_command_line_entry_takes_claim_and_auto(tmp_path, monkeypatch):
    calls: list = []
    assert sweep.main(tiny_sweep(3), str(tmp_path / "claim"), "train", "claim", run_fn=fake_run(calls)) == 0
    assert calls == ["w0", "w1", "w2"]
    calls.clear()
    monkeypatch.setenv("EFFSCALE_SHARD", "1/2")
    assert sweep.main(tiny_sweep(3), str(tmp_path / "auto"), "train", "auto", run_fn=fake_run(calls)) == 0
    assert calls == ["w1"]


def test_a_live_claim_is_waited_for_and_taken_over_once_it_expires(tmp_path):
    other = lease.acquire(tmp_path / "w1" / claims.CLAIM, "a killed worker", 0.8, renew=False)  # nobody renews it
    calls, lines = [], []
    began = time.time()
    out = sweep.run(tiny_sweep(4), tmp_path, fake_run(calls), claim=True, ttl_s=0.8, log=lines.append)
    assert calls == ["w0", "w2", "w3", "w1"] and set(out.values()) == {"done"}
    assert time.time() >= other.holder.expires > began  # w1 ran only after its claim expired
    waiting = "\n".join(lines)
    assert "waiting for 1 point(s)" in waiting and f"held by a killed worker (pid {os.getpid()} on " in waiting
    assert _claims_left(tmp_path) == []


def test_a_failing_point_is_tried_once_per_round(tmp_path):
    calls: list = []
    out = sweep.run(tiny_sweep(3), tmp_path, fake_run(calls, frozenset({"w1"})), claim=True, ttl_s=5, log=print)
    assert out == {"w0": "done", "w1": "failed", "w2": "done"} and calls == ["w0", "w1", "w2"]
    assert json.loads((tmp_path / "w1" / "error.json").read_text())["attempts"] == 1
    calls.clear()
    out = sweep.run(tiny_sweep(3), tmp_path, fake_run(calls), claim=True, ttl_s=5, log=print)  # the next round
    assert out == {"w1": "done"} and calls == ["w1"] and not (tmp_path / "w1" / "error.json").exists()


def test_a_stop_releases_the_claim_and_the_point_resumes_in_the_next_run(tmp_path):
    class Stopped(Exception):
        pass

    def stopping(config, workdir):
        (Path(workdir) / "checkpoint_5").mkdir()
        assert lease.read_holder(Path(workdir) / claims.CLAIM).pid == os.getpid()  # trained under its claim
        raise Stopped

    with pytest.raises(Stopped):
        sweep.run(tiny_sweep(2), tmp_path, stopping, claim=True, ttl_s=60, log=lambda s: None, stop_on=(Stopped,))
    assert _claims_left(tmp_path) == [] and results.point_state(tmp_path / "w0") == "partial"
    calls: list = []
    began = time.time()
    sweep.run(tiny_sweep(2), tmp_path, fake_run(calls), claim=True, ttl_s=60, log=lambda s: None)
    assert calls == ["w0", "w1"] and time.time() - began < 30  # no wait for the 60 s claim: it was released


def test_a_point_another_driver_trains_is_held_not_failed(tmp_path):
    # Another driver's trainer holds w1's writer lease (a static share of the same sweep, say).
    lease.acquire(tmp_path / "w1" / lease.WRITER, "a trainer", 0.8, renew=False)
    calls, lines = [], []
    out = sweep.run(tiny_sweep(3), tmp_path, fake_run(calls, writer_lease=True), log=lines.append)
    assert out == {"w0": "done", "w1": "held", "w2": "done"}
    assert not (tmp_path / "w1" / "error.json").exists() and not (tmp_path / "w1" / record.RESULT).exists()
    assert "w1: not run, another process is training it" in "\n".join(lines)
    assert lines[-1] == "sweep tiny: 2 done, 0 failed , held elsewhere ['w1']"
    # A claiming worker looks at it again until the hold ends (here: expires), then runs it.
    calls.clear()
    out = sweep.run(tiny_sweep(3), tmp_path, fake_run(calls, writer_lease=True), claim=True, ttl_s=0.8, log=print)
    assert out == {"w1": "done"} and set(calls) == {"w1"} and len(calls) >= 2
    assert not (tmp_path / "w1" / lease.WRITER).exists() and _claims_left(tmp_path) == []


def test_held_elsewhere_follows_the_cause_chain():
    try:
        try:
            raise lease.HeldError("x is held")
        except ValueError as e:
            raise RuntimeError("config error") from e
    except RuntimeError as wrapped:
        assert claims.held_elsewhere(wrapped)
    assert not claims.held_elsewhere(RuntimeError("boom"))


# ----------------------------------------------------------------------------- worker processes

_WORKER = textwrap.dedent(
    """
    import dataclasses, json, os, time
    from pathlib import Path
    from configs.sweeps import base
    from effscale import record, results, sweep

    LOG = Path({log!r})

    def note(kind, workdir, step):
        line = json.dumps({{"kind": kind, "point": Path(workdir).name, "pid": os.getpid(), "step": step,
                            "t": time.time()}})
        with LOG.open("a") as f:
            f.write(line + "\\n")

    def fake_train(config, workdir):
        # 8 steps of 0.05 s, a checkpoint after each; resumes from the latest, then writes result.json atomically.
        ckpt = Path(workdir) / "ckpt.json"
        start = (results.read_json(ckpt) or {{}}).get("step", 0)
        for step in range(start + 1, 9):
            time.sleep(0.05)
            record.write_json(ckpt, {{"step": step}})
            note("step", workdir, step)
        top1 = 0.5 + config.model.width / 10
        run = dataclasses.replace(record.read_record({example!r}), eval_top1=top1, eval_top1_ema=top1,
                                  resumed_from_step=start)
        record.write_record(Path(workdir) / "result.json", run)
        note("done", workdir, start)

    c = base.get_config()
    c.sweep = sweep.block("stolen", [sweep.point(f"p{{k}}", "width", {{"model.width": 1.0 + k / 4}}) for k in range(6)])
    sweep.run(c, {workdir!r}, fake_train, claim=True)
    """
)


def _notes(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "stalled"])
def test_three_workers_share_a_sweep_and_finish_a_lost_workers_point(tmp_path, sig):
    """SIGKILL: its process is gone from this machine, so its claim is taken at once. SIGSTOP (a host that
    stalled or vanished from the network): its claim is taken once it expires, the TTL (1 s) after its last renewal."""
    workdir, log = tmp_path / "sweep", tmp_path / "notes.jsonl"
    code = _WORKER.format(log=str(log), example=str(V0_EXAMPLE), workdir=str(workdir))
    env = {**os.environ, lease.TTL_ENV: "1"}
    workers = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    try:
        deadline = time.time() + 60
        while not (second := [n for n in _notes(log) if n["step"] == 2]):
            assert time.time() < deadline and all(w.poll() is None for w in workers), "no worker got to step 2"
            time.sleep(0.01)
        victim = next(w for w in workers if w.pid == second[0]["pid"])
        victim.send_signal(sig)  # mid-point: 2 of its 8 steps are checkpointed
        if sig == signal.SIGKILL:
            victim.wait()
        lost_at = time.time()
        survivors = [w for w in workers if w is not victim]
        outputs = [w.communicate(timeout=60)[0] for w in survivors]
    finally:
        for w in workers:
            w.kill()
            w.wait()
    assert [w.returncode for w in survivors] == [0, 0], outputs

    notes = sorted(_notes(log), key=lambda n: n["t"])
    lost = second[0]["point"]
    done = [n for n in notes if n["kind"] == "done"]
    assert sorted(n["point"] for n in done) == [f"p{k}" for k in range(6)]  # each completed exactly once
    assert victim.pid not in {n["pid"] for n in done}
    assert next(n for n in done if n["point"] == lost)["step"] >= 2  # resumed from its checkpoint
    first = next(n for n in notes if n["point"] == lost)["t"]
    taken = next(n for n in notes if n["point"] == lost and n["pid"] != victim.pid)["t"]
    assert taken >= lost_at
    if sig == signal.SIGSTOP:  # the claim, taken before `first`, expired at least 1 s after it was taken
        assert taken - first >= 0.9, (first, taken)
    for k in range(6):  # one worker at a time per point: its notes come in one block per worker
        pids = [n["pid"] for n in notes if n["point"] == f"p{k}"]
        blocks = [pid for i, pid in enumerate(pids) if i == 0 or pids[i - 1] != pid]
        assert len(blocks) == len(set(blocks)) <= (2 if f"p{k}" == lost else 1), (k, blocks)
    for k in range(6):
        files = sorted(p.name for p in (workdir / f"p{k}").iterdir() if not p.name.startswith("."))
        assert files == ["ckpt.json", "point.json", "result.json"], files  # no claim left, no second record
    rows = results.collect(workdir)
    assert sorted(r["point"] for r in rows) == [f"p{k}" for k in range(6)] and {r["status"] for r in rows} == {"done"}


def test_a_stop_while_waiting_for_a_claim_ends_the_wait_and_releases_nothing_it_does_not_hold(tmp_path):
    """A stop request during the scan's wait for points other workers hold ends the sweep within a second,
    not after the wait."""
    from effscale.training import errors

    held = lease.acquire(tmp_path / "w0" / claims.CLAIM, "another worker", 60, renew=False)
    stop_at = time.monotonic() + 1.5
    requested = lambda: signal.SIGTERM if time.monotonic() >= stop_at else None  # noqa: E731
    began = time.monotonic()
    with pytest.raises(errors.SweepStopped):
        sweep.run(tiny_sweep(1), tmp_path, fake_run([]), claim=True, ttl_s=60, log=lambda s: None,
                  stop_requested=requested)  # fmt: skip
    assert 1.5 <= time.monotonic() - began < 4  # the scan waits ttl / 3 = 20 s between looks
    assert lease.read_holder(tmp_path / "w0" / claims.CLAIM) == held.holder  # the other worker's claim stands
