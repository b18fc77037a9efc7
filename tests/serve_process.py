"""A real `opencoupon serve` process, for the tests that kill a server or run a second one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2

from conftest import TEST_SECRET_KEY, free_port

OPENCOUPON = str(Path(sys.executable).parent / "opencoupon")


def serve_env(database_url: str, var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a test server: this database, the test key, no rate limit."""
    return {
        **os.environ,
        "OPENCOUPON_DATABASE_URL": database_url,
        "OPENCOUPON_SECRET_KEY": TEST_SECRET_KEY,
        "OPENCOUPON_VAR_DIR": str(var_dir),
        "OPENCOUPON_RATE_LIMIT_PER_SECOND": "0",
        **extra,
    }


@dataclass
class ServeProcess:
    env: dict[str, str]
    workers: int = 1
    process: subprocess.Popen[bytes] | None = None
    base: str = ""

    def start(self) -> str:
        """Start the server (its own process group: `kill` takes every API process) and wait
        until it answers; its base URL."""
        port = free_port()
        command = [OPENCOUPON, "serve", "--host", "127.0.0.1", "--port", str(port), "--no-migrate"]
        self.process = subprocess.Popen(
            [*command, "--workers", str(self.workers)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode} before answering")
            try:
                if httpx2.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return self.base
            except httpx2.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not start")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
