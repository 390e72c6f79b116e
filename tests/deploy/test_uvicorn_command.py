"""Every way the service is started names the same uvicorn protocol (service/server/http_protocol.py, with the
connection limits httptools lacks): scripts/serve.sh, the image's CMD and the test servers."""

from __future__ import annotations

from devtools.paths import ROOT
from devtools.servers import SERVICE_UVICORN_ARGS
from service.server.http_protocol import HTTP_PROTOCOL


def test_the_service_runs_with_the_same_uvicorn_protocol_everywhere():
    """scripts/serve.sh, the container and the test servers all serve through HTTP_PROTOCOL."""
    assert SERVICE_UVICORN_ARGS == ("--http", HTTP_PROTOCOL)
    serve_sh = (ROOT / "scripts" / "serve.sh").read_text()
    assert f"--http {HTTP_PROTOCOL}" in serve_sh
    cmd = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    assert f'"--http", "{HTTP_PROTOCOL}"' in cmd
