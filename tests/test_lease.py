"""Leases (effscale.lease): exclusive creation, the holder named, takeover after expiry, renewal, release;
and the trainer's one-writer rule on a real tiny run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import train_support
from train_support import launch, tiny_config

from effscale import lease, record


class FakeClock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _leftovers(directory: Path) -> list[str]:
    """Temporary or set-aside files a lease operation left behind."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_create_exclusive_creates_once_with_complete_content(tmp_path):
    path = tmp_path / "sub" / "x.lease"
    assert lease.create_exclusive(path, b"first")
    assert not lease.create_exclusive(path, b"second")
    assert path.read_bytes() == b"first"
    assert _leftovers(path.parent) == []


def test_a_live_lease_refuses_with_its_holder_named(tmp_path):
    path = tmp_path / "claim.lease"
    clock = FakeClock(1_700_000_000.0)  # 2023-11-14 22:13:20 UTC
    held = lease.acquire(path, "a sweep worker", 90, clock=clock, renew=False)
    on_disk = json.loads(path.read_text())
    assert on_disk["pid"] == os.getpid() and on_disk["host"] == socket.gethostname()
    assert on_disk["started"] == on_disk["renewed"] == 1_700_000_000.0 and on_disk["expires"] == 1_700_000_090.0
    clock.now += 30
    with pytest.raises(lease.HeldError) as e:
        lease.acquire(path, "another", 90, clock=clock, renew=False)
    message = str(e.value)
    assert "\n" not in message
    assert f"held by a sweep worker (pid {os.getpid()} on {socket.gethostname()})" in message
    assert "since 2023-11-14 22:13:20 UTC" in message and "expires at 2023-11-14 22:14:50 UTC" in message
    assert json.loads(path.read_text())["token"] == held.holder.token  # the refused caller changed nothing
    assert _leftovers(tmp_path) == []


def test_an_expired_lease_is_taken_over_and_its_old_holder_finds_out(tmp_path):
    path = tmp_path / "claim.lease"
    clock = FakeClock()
    old = lease.acquire(path, "old", 10, clock=clock, renew=False)
    clock.now += 10.5  # the holder was killed: nobody renewed
    new = lease.acquire(path, "new", 10, clock=clock, renew=False)
    assert lease.read_holder(path).token == new.holder.token != old.holder.token
    assert not old.renew()
    with pytest.raises(lease.LostError, match="taken over by new"):
        old.check()
    old.release()  # not its lease any more: leaves the new holder's alone
    assert lease.read_holder(path).token == new.holder.token
    new.check()
    new.release()
    assert not path.exists() and _leftovers(tmp_path) == []


def test_a_holder_past_its_expiry_does_not_renew_over_a_possible_taker(tmp_path):
    path = tmp_path / "writer.lease"
    clock = FakeClock()
    stalled = lease.acquire(path, "stalled", 10, clock=clock, renew=False)
    before = path.read_bytes()
    clock.now += 11
    assert not stalled.renew()
    assert path.read_bytes() == before
    with pytest.raises(lease.LostError, match="expired at"):
        stalled.check()


def test_a_lease_whose_process_is_gone_from_this_machine_is_taken_over_at_once(tmp_path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(ended.stdout)
    path = tmp_path / "writer.lease"
    held = lease.acquire(path, "killed", 600, renew=False)
    here = dataclasses.replace(held.holder, pid=dead_pid)
    elsewhere = dataclasses.replace(here, machine="another-boot:1")  # that pid may live on another machine
    record.write_text(path, elsewhere.to_bytes().decode())
    with pytest.raises(lease.HeldError, match=f"pid {dead_pid} on "):
        lease.acquire(path, "next", 600, renew=False)
    record.write_text(path, here.to_bytes().decode())
    taken = lease.acquire(path, "next", 600, renew=False)
    assert lease.read_holder(path).token == taken.holder.token
    assert here.machine == lease.this_machine() != ""


def test_renewal_extends_a_live_lease(tmp_path):
    path = tmp_path / "writer.lease"
    clock = FakeClock()
    held = lease.acquire(path, "h", 10, clock=clock, renew=False)
    clock.now += 6
    assert held.renew()
    on_disk = lease.read_holder(path)
    assert (on_disk.started, on_disk.renewed, on_disk.expires) == (clock.now - 6, clock.now, clock.now + 10)
    clock.now += 9  # past the first expiry, within the renewed one
    with pytest.raises(lease.HeldError):
        lease.acquire(path, "other", 10, clock=clock, renew=False)


def test_an_unreadable_lease_counts_as_expired(tmp_path):
    path = tmp_path / "claim.lease"
    path.write_text("{not json")
    held = lease.acquire(path, "h", 10, renew=False)
    assert lease.read_holder(path).token == held.holder.token


@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "stale"])
def test_racing_acquirers_have_exactly_one_winner(tmp_path, stale):
    threads = 8
    for round_ in range(25):
        path = tmp_path / f"r{round_}" / "claim.lease"
        if stale:
            lease.acquire(path, "killed", 5, clock=FakeClock(time.time() - 100), renew=False)
        barrier = threading.Barrier(threads)
        won, refused = [], []

        def contend(barrier=barrier, path=path, won=won, refused=refused):
            barrier.wait()
            try:
                won.append(lease.acquire(path, "racer", 60, renew=False))
            except lease.HeldError:
                refused.append(1)

        workers = [threading.Thread(target=contend) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert len(won) == 1 and len(refused) == threads - 1, (round_, len(won))
        assert lease.read_holder(path).token == won[0].holder.token
        assert _leftovers(path.parent) == []


def test_the_renewal_thread_keeps_a_lease_alive_and_notices_a_loss(tmp_path):
    path = tmp_path / "writer.lease"
    held = lease.acquire(path, "h", 0.6)  # renewed every 0.2 s
    started = held.holder.started
    time.sleep(1.5)  # two and a half lifetimes
    with pytest.raises(lease.HeldError):
        lease.acquire(path, "other", 0.6, renew=False)
    assert lease.read_holder(path).renewed > started + 1.0
    # Someone replaced it (a takeover after a stall, say): the thread finds out at its next renewal.
    thief = dataclasses.replace(held.holder, token="someone-else", holder="thief")
    record.write_text(path, thief.to_bytes().decode())
    deadline = time.time() + 2
    while held.lost is None and time.time() < deadline:
        time.sleep(0.02)
    with pytest.raises(lease.LostError, match="taken over by thief"):
        held.check()
    held.release()
    assert lease.read_holder(path).token == "someone-else"


def test_release_removes_only_its_own_and_is_idempotent(tmp_path):
    path = tmp_path / "claim.lease"
    with lease.acquire(path, "h", 0.3) as held:
        assert path.exists()
    assert not path.exists()
    held.release()
    held.check()  # a release is no loss
    assert _leftovers(tmp_path) == []


def test_ttl_from_the_environment(monkeypatch):
    monkeypatch.delenv(lease.TTL_ENV, raising=False)
    assert lease.ttl_from_env() == lease.DEFAULT_TTL_S == 120.0
    monkeypatch.setenv(lease.TTL_ENV, "1.5")
    assert lease.ttl_from_env() == 1.5
    for bad in ("soon", "0", "-3", "inf", "nan"):
        monkeypatch.setenv(lease.TTL_ENV, bad)
        with pytest.raises(ValueError, match=rf"^EFFSCALE_LEASE_TTL={bad}: must be a number of seconds > 0"):
            lease.ttl_from_env()


def test_other_processes_of_a_run_hold_nothing(tmp_path):
    with lease.hold_writer(tmp_path / "run", enabled=False) as held:
        held.check()
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- one writer per run


def _tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under `root` (itself included): its mode and, for a file, the SHA-256 of its bytes."""
    out = {".": (os.stat(root).st_mode, "")}
    for path in sorted(root.rglob("*")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[str(path.relative_to(root))] = (os.lstat(path).st_mode, digest)
    return out


def test_a_held_workdir_is_refused_untouched_and_an_expired_hold_taken_over(tmp_path):
    from effscale import train

    train_support.use_compilation_cache()
    workdir = tmp_path / "run"
    path = workdir / lease.WRITER
    other = lease.acquire(path, "a trainer", 600, renew=False)
    before = _tree(workdir)
    with pytest.raises(train.ConfigError) as e:
        train.train_and_evaluate(tiny_config(steps=2), str(workdir))
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{path} is held by a trainer (pid {os.getpid()} on ")
    assert f"since {lease.utc(other.holder.started)}" in message and "expires at" in message
    assert _tree(workdir) == before

    # The holder was killed (nobody renews) and its hold has run out: the next run takes over.
    expired = dataclasses.replace(other.holder, expires=time.time() - 1)
    record.write_text(path, expired.to_bytes().decode())
    out = train.train_and_evaluate(tiny_config(steps=2), str(workdir))
    assert out.status == "finished" and (workdir / record.RESULT).exists()
    assert not path.exists()  # released at the end


def test_a_second_trainer_is_refused_while_the_first_trains_and_the_hold_ends_with_it(tmp_path):
    from effscale import train

    train_support.use_compilation_cache()
    workdir = tmp_path / "run"
    proc = launch("--config", "tests/train_support.py", "--config.train.num_steps=100000", f"--workdir={workdir}")
    try:
        deadline = time.time() + 180
        while not (workdir / record.METRICS).exists():  # training has begun: the lease is held
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.1)
        holder = lease.read_holder(workdir / lease.WRITER)
        assert holder.pid == proc.pid and holder.live(time.time())
        with pytest.raises(train.ConfigError, match=rf"held by a trainer \(pid {proc.pid} on "):
            train.train_and_evaluate(tiny_config(steps=2), str(workdir))
    finally:
        proc.send_signal(signal.SIGTERM)  # stops after a save, releasing the lease on the way out
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert not (workdir / lease.WRITER).exists()


def test_sigterm_while_the_run_compiles_stops_it_cleanly_releasing_the_lease(tmp_path):
    """The lease is taken before restoring and compiling; a signal from then on must not leave it held."""
    workdir = tmp_path / "run"
    proc = launch("--config", "tests/train_support.py", "--config.train.num_steps=100000", f"--workdir={workdir}")
    deadline = time.time() + 180
    while not (workdir / lease.WRITER).exists():  # held: restoring or compiling now
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    # It stops before its first step: the state is the one it started from, nothing to save, no step to wait for.
    assert "Stopped by SIGTERM before training a step; nothing new to save" in err
    assert not (workdir / lease.WRITER).exists()
    metrics = workdir / record.METRICS
    assert not metrics.exists() or '"kind": "train"' not in metrics.read_text()


def test_a_signal_while_the_run_is_validated_stops_it_before_anything_is_written(tmp_path, monkeypatch):
    from effscale import train
    from effscale.training import loop

    real = loop.make_setup

    def signalled(config):  # SIGTERM while the config, data and weights are checked (dataset preparation, say)
        os.kill(os.getpid(), signal.SIGTERM)
        return real(config)

    monkeypatch.setattr(loop, "make_setup", signalled)
    workdir = tmp_path / "run"
    with pytest.raises(train.Interrupted, match="before training a step; nothing new to save"):
        train.train_and_evaluate(tiny_config(steps=2), str(workdir))
    assert not workdir.exists() or not any(workdir.iterdir())  # not even the lease was taken
