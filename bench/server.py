"""The dashboard as a host serves it, for the benchmark and the browser tests: `streamlit run` on a free port of
127.0.0.1, stopped afterwards."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
START_TIMEOUT_S = 60


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the moment of asking."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(data: Path, artifacts: Path, code: Path = REPO, **settings: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`streamlit run` of the app in `code` on a free localhost port, with `data` as the dataset root and
    `artifacts` as ARTIFACTS_DIR (plus `settings` as environment variables); yields its URL and process."""
    port = free_port()
    env = {**os.environ, "CNMC_DATA_DIR": str(data), "ARTIFACTS_DIR": str(artifacts), **settings}
    if "DEMO_MODE" not in settings:
        env.pop("DEMO_MODE", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "streamlit_app.py",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=code,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.terminate()
        process.wait(timeout=30)
