"""A real server: an ASGI app in its own uvicorn process on a free loopback port, ready once /readyz answers
200.

Shared by the HTTP tests (tests/server/, tests/client/, ...) and the benchmarks (bench/bench.py,
bench/load.py, bench/hostile.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from devtools.paths import ROOT
from service.server.http_protocol import HTTP_PROTOCOL

SERVICE_APP = "service.server.app:app"
# uvicorn's options that scripts/serve.sh and the Dockerfile's CMD give the service (a test checks they agree)
SERVICE_UVICORN_ARGS = ("--http", HTTP_PROTOCOL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        app: str = SERVICE_APP,
        startup_timeout: float = 120,
        log: Path | None = None,
        quiet: bool = False,
        uvicorn_args: tuple[str, ...] = (),
        wait: bool = True,
    ):
        """env: ATTENTION_* settings; log: a file for the app's stderr and stdout (JSON log lines: the
        service's and uvicorn's, whose access log goes to stdout); quiet: its stderr is dropped; uvicorn_args:
        more options, after SERVICE_UVICORN_ARGS (a later one wins).
        Returns once /readyz answers 200 (wait=False: at once, and wait_ready() waits); raises RuntimeError
        if the app exits or is not ready within startup_timeout seconds."""
        self.app, self.startup_timeout, self.ready = app, startup_timeout, False
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        stderr = log.open("wb") if log is not None else subprocess.DEVNULL if quiet else None
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                app,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                *SERVICE_UVICORN_ARGS,
                *uvicorn_args,
            ],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stderr=stderr,
            stdout=stderr if log is not None else None,
        )
        self.client = httpx.Client(base_url=self.url, timeout=60)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        if self.ready:
            return
        deadline = time.monotonic() + self.startup_timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"uvicorn serving {self.app} exited with {self.process.returncode}{self._log_tail()}"
                    )
                try:
                    if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                        self.ready = True
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            late = f"uvicorn serving {self.app} did not become ready in {self.startup_timeout} s"
            raise RuntimeError(late + self._log_tail())
        except BaseException:
            self.stop()
            raise

    def _log_tail(self) -> str:
        if self.log is None or not self.log.is_file():
            return ""
        return "; its log ends:\n" + self.log.read_text(errors="replace")[-3000:]

    def post(self, body: dict[str, Any] | bytes, **kwargs: Any) -> httpx.Response:
        """POST /attend; a dict is sent as JSON with NaN/Infinity written out, as many clients do."""
        content = json.dumps(body).encode() if isinstance(body, dict) else body
        headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
        return self.client.post("/attend", content=content, headers=headers, **kwargs)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL if the app has not ended within `timeout` seconds (again: nothing)."""
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
