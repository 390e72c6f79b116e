"""A local stand-in for the Hugging Face Hub (HF_ENDPOINT=LocalHub.url), on 127.0.0.1: it serves model
repositories the way the Hub's HTTP API does for huggingface_hub's HfApi.model_info and hf_hub_download,

  GET /api/models/{repo}/revision/{revision}[?blobs=True]  {"id", "sha", "siblings": [{"rfilename", "size",
                                                             "blobId", "lfs": {"sha256", "size", ...}}]}
  HEAD, GET /{repo}/resolve/{revision}/{file}               the file, with X-Repo-Commit, ETag, Content-Length

and the Hub's error answers (404 with X-Error-Code RepoNotFound, RevisionNotFound or EntryNotFound). It logs
every request it answers, so that a test can tell what was fetched, and what was not."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

API = re.compile(r"/api/models/(?P<repo>.+)/revision/(?P<revision>[^/]+)")
RESOLVE = re.compile(r"/(?P<repo>[^/]+(?:/[^/]+)?)/resolve/(?P<revision>[^/]+)/(?P<file>.+)")


@dataclass
class Repository:
    """A repository at one commit: its files by name, and the revision names (branches) that point to it."""

    files: dict[str, bytes]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    branches: tuple[str, ...] = ("main",)
    missing: set[str] = field(default_factory=set)  # listed by the API, but not served (404)
    answered_commit: str | None = None  # the commit the API answers, when it is not the repository's own

    @classmethod
    def from_folder(cls, folder: Path, **settings: Any) -> Repository:
        files = {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}
        return cls(files, **settings)

    def resolves(self, revision: str) -> bool:
        return revision == self.commit or revision in self.branches


class LocalHub:
    def __init__(self, repositories: dict[str, Repository]):
        self.repositories = repositories
        self.requests: list[tuple[str, str]] = []  # (method, path) of each request answered
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hub.answer(self, with_body=True)

            def do_HEAD(self) -> None:
                hub.answer(self, with_body=False)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LocalHub:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fetched_files(self) -> list[str]:
        """The files whose bytes were sent (GET of a resolve URL)."""
        return [
            m["file"] for method, path in self.requests if method == "GET" and (m := RESOLVE.fullmatch(path))
        ]

    def answer(self, request: BaseHTTPRequestHandler, with_body: bool) -> None:
        path = unquote(urlsplit(request.path).path)
        self.requests.append((request.command, path))
        if (match := API.fullmatch(path)) is not None:
            repository = self.repositories.get(match["repo"])
            if repository is None:
                return _send(
                    request, 404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}
                )
            if not repository.resolves(match["revision"]):
                return _send(
                    request, 404, b'{"error": "Revision not found"}', {"X-Error-Code": "RevisionNotFound"}
                )
            return _send(
                request, 200, json.dumps(_info(match["repo"], repository)).encode(), with_body=with_body
            )
        if (match := RESOLVE.fullmatch(path)) is not None:
            repository = self.repositories.get(match["repo"])
            if repository is None or not repository.resolves(match["revision"]):
                return _send(
                    request, 404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}
                )
            content = repository.files.get(match["file"])
            if content is None or match["file"] in repository.missing:
                headers = {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repository.commit}
                return _send(request, 404, b'{"error": "Entry not found"}', headers)
            headers = {
                "X-Repo-Commit": repository.commit,
                "ETag": f'"{hashlib.sha256(content).hexdigest()}"',
                "Content-Type": "application/octet-stream",
            }
            return _send(request, 200, content, headers, with_body=with_body)
        _send(request, 404, b'{"error": "Not found"}')


def _info(repo: str, repository: Repository) -> dict[str, Any]:
    return {
        "id": repo,
        "modelId": repo,
        "sha": repository.answered_commit or repository.commit,
        "private": False,
        "siblings": [
            {
                "rfilename": name,
                "size": len(content),
                "blobId": hashlib.sha1(content).hexdigest(),
                "lfs": {
                    "sha256": hashlib.sha256(content).hexdigest(),
                    "size": len(content),
                    "pointerSize": 134,
                }
                if name.endswith(".safetensors")
                else None,
            }
            for name, content in repository.files.items()
        ],
    }


def _send(
    request: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    with_body: bool = True,
) -> None:
    request.send_response(status)
    for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
        request.send_header(name, value)
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    if with_body:
        request.wfile.write(body)
