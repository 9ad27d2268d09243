"""Many runs on a real Ray cluster on this machine: a head on 127.0.0.1 and a second node joining it, each started
by this module and stopped by the process id it started (never by a name)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import PipelineError
from pipeline.runs.folder import RunFolder

pytestmark = pytest.mark.slow  # trains tiny models in Ray's worker processes
ray = pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
FAST = {"freeze_backbone": True, "random_features": True}
"""Fast mode on random features, for tests whose subject is the engine, not what a network learns."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_node(arguments: list[str], log: Path) -> subprocess.Popen:
    """`ray start ... --block` in its own session: it owns its Ray processes and stops them on SIGTERM."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen(
        [RAY, "start", *arguments, "--block"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the `ray start` we started (it stops its own children), then its process group if need be."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _wait_for_nodes(address: str, count: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.count("node_") >= count:
            return
        time.sleep(2)
    raise TimeoutError(f"the Ray cluster at {address} did not show {count} nodes")


@pytest.fixture
def ray_cluster(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A head (1 CPU) and a worker node (1 CPU) on 127.0.0.1; yields the address and the worker's process. A new
    one for each test: a cluster that ran the sweep's tasks did not always offer both CPUs at once to the next."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head = _start_node(
        [
            "--head",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            "1",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        tmp_path / "head.log",
    )
    worker = None
    try:
        _wait_for_nodes(address, 1)
        worker = _start_node(
            ["--address", address, "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"],
            tmp_path / "worker.log",
        )
        _wait_for_nodes(address, 2)
        yield address, worker
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for process in (worker, head):
            if process is not None:
                _stop(process)


def _probabilities(folder: RunFolder) -> np.ndarray:
    return folder.predictions().sort_values("path")["prob_all"].to_numpy()


def test_a_sweep_and_a_crossval_on_a_ray_cluster_match_the_local_engine(
    ray_cluster, tiny_config, artifacts_root, tmp_path: Path
) -> None:
    """In fast mode (a head on cached features of a frozen backbone): the engine is the subject, and a head trains
    in seconds where a whole network's first step traces for half a minute."""
    from pipeline.runs.crossval import crossval_dir
    from pipeline.training.engines import cross_validate, sweep

    address, _ = ray_cluster
    config = tiny_config.replace(**FAST)
    lines: list[str] = []
    on_ray = sweep(config, [1], [16], tmp_path / "ray", engine="ray", address=address, report=lines.append)
    local = sweep(config, [1], [16], tmp_path / "local")
    for remote, here in zip(on_ray, local, strict=True):
        assert remote.status()["state"] == here.status()["state"] == "completed"
        assert remote.split().equals(here.split()), "the same seed gives the same patients and images"
        assert remote.config()["batch_size"] == here.config()["batch_size"]
        # CPU training is not bit-reproducible here (two local runs differ by up to 0.01 in P(ALL) after an epoch)
        assert np.abs(_probabilities(remote) - _probabilities(here)).max() < 0.1
    assert any(line.endswith("completed done epoch 1") for line in lines), lines

    folders, summary_path = cross_validate(config, 2, tmp_path / "cv", engine="ray", address=address)
    assert [folder.status()["state"] for folder in folders] == ["completed", "completed"]
    summary = json.loads(summary_path.read_text())
    assert summary_path.parent == crossval_dir() and summary["folds"] == summary["completed"] == 2


EPOCHS_OF_LOST_RUNS = 12
"""Enough tiny epochs that the two runs surely train at the same time, even when a busy machine (the suite's other
worker) starts one task's TensorFlow seconds after the other's: with 4, one run was seen done before the other
began, twice in clean-clone runs of the suite on two workers."""


def test_a_run_on_a_lost_node_is_retried_and_resumes_never_left_running(
    ray_cluster, tiny_config, artifacts_root, tmp_path: Path
) -> None:
    from pipeline.training.engines import run_all
    from pipeline.training.train import prepare_run

    address, worker = ray_cluster
    config = tiny_config.replace(epochs=EPOCHS_OF_LOST_RUNS)
    folders = [
        prepare_run(config.replace(seed=seed, name=f"lost-{seed}"), tmp_path / "runs", "lost") for seed in (1, 2)
    ]
    killed = {}

    def kill_when_both_train(line: str) -> None:
        states = [folder.raw_status() for folder in folders]
        if not killed and all(s.get("state") == "running" and (s.get("epochs_done") or 0) >= 1 for s in states):
            killed["at"] = time.monotonic()
            _stop(worker)  # the worker node goes away mid-run, with the run it held

    assert run_all(folders, "ray", address=address, report=kill_when_both_train)
    assert killed, "both runs were training when the node was lost"
    for folder in folders:
        status = folder.status()
        assert status["state"] == "completed" and status["epochs_done"] == EPOCHS_OF_LOST_RUNS
        history = folder.history()
        assert history["epoch"].tolist() == list(range(1, EPOCHS_OF_LOST_RUNS + 1)), (
            "resumed from its checkpoint, no epoch twice"
        )
    assert any(folder.raw_status().get("phase") == "done" for folder in folders)


def test_the_ray_engine_without_ray_or_with_no_cluster_says_what_to_do(
    tiny_config, artifacts_root, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.training import cluster
    from pipeline.training.engines import run_all
    from pipeline.training.train import prepare_run

    folder = prepare_run(tiny_config, tmp_path / "runs")
    with pytest.raises(PipelineError, match="No Ray cluster answers at 127.0.0.1"):
        cluster.execute_on_ray([folder], address=f"127.0.0.1:{_free_port()}")
    with pytest.raises(PipelineError, match="is not HOST:PORT"):
        cluster.execute_on_ray([folder], address="somewhere")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(PipelineError, match="pip install -r requirements-ray.txt"):
        run_all([folder], "ray")
    with pytest.raises(PipelineError, match="Unknown engine"):
        run_all([folder], "slurm")
    assert folder.status()["state"] == "queued", "nothing ran"


def test_the_dashboard_sends_its_runs_to_a_configured_cluster(
    tiny_config, artifacts_root, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a cluster configured, the Train page's background process drives the runs as Ray tasks."""
    from pipeline.training import launch

    commands = []

    class Process:
        pid = os.getpid()

    monkeypatch.setattr(
        launch, "_spawn", lambda folders, engine: commands.append(launch.execute_command(folders, engine)) or Process()
    )
    folders = launch.launch([tiny_config], tmp_path / "runs", ray_address="127.0.0.1:6379")
    assert commands[0][-4:] == ["--engine", "ray", "--address", "127.0.0.1:6379"]
    assert commands[0][3] == "execute" and commands[0][4] == str(folders[0].path.resolve())


def test_execute_runs_prepared_folders_through_the_engine_it_is_given(
    tiny_config, artifacts_root, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.__main__ import main
    from pipeline.training import engines, train

    calls = []
    monkeypatch.setattr(engines, "run_all", lambda folders, engine, **options: calls.append((engine, options)) or True)
    folder = train.prepare_run(tiny_config, tmp_path / "runs")
    assert main(["execute", str(folder.path), "--engine", "ray", "--address", "auto", "--gpus-per-run", "1"]) == 0
    assert calls == [("ray", {"address": "auto", "cpus_per_run": 1.0, "gpus_per_run": 1.0})]


def test_a_ray_started_for_one_call_runs_the_runs_and_leaves_no_token_behind(
    tiny_config, artifacts_root, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--address local`: a new Ray on this machine for the call (never a cluster an earlier `ray start` left), shut
    down afterwards, and no ~/.ray/auth_token that would make every later `ray start` here ask for it."""
    from pipeline.training.engines import run_all
    from pipeline.training.train import prepare_run

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    folder = prepare_run(tiny_config.replace(name="one-call", **FAST), tmp_path / "runs")
    assert run_all([folder], "ray", address="local", cpus_per_run=1)
    assert folder.status()["state"] == "completed" and not ray.is_initialized()
    assert not (tmp_path / "home" / ".ray" / "auth_token").exists()
