"""A stand-in for the Hugging Face Hub on 127.0.0.1: the endpoints ``huggingface_hub.hf_hub_download`` uses.

``HEAD`` and ``GET {endpoint}/{org}/{repo}/resolve/{revision}/{filename}``: the file's bytes with the headers the
Hub sends (``ETag``, ``X-Repo-Commit``, ``Content-Length``), or a 404 with the Hub's ``X-Error-Code``
(``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) that ``huggingface_hub`` turns into its error types.
A revision is a branch name or a commit hash. Every request is recorded (method, path, Authorization header);
others than these (huggingface_hub asks for a few of its own, such as ``/api/agent-harnesses``) get a 404."""

from __future__ import annotations

import hashlib
import http.server
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote


@dataclass
class FakeHub:
    """Repositories (commit -> files, branch -> commit) served at :attr:`endpoint` while the server runs."""

    commits: dict[str, dict[str, dict[str, bytes]]] = field(default_factory=dict)
    branches: dict[str, dict[str, str]] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    endpoint: str = ""

    def add(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """A new commit of ``repo_id`` holding ``files``, set as ``branch``; its hash."""
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(files):
            digest.update(name.encode() + hashlib.sha256(files[name]).digest())
        commit = digest.hexdigest()
        self.commits.setdefault(repo_id, {})[commit] = dict(files)
        self.branches.setdefault(repo_id, {})[branch] = commit
        return commit

    def file_requests(self) -> list[tuple[str, str, str | None]]:
        """The requests for files of a repository (``/resolve/`` URLs), in order."""
        return [request for request in self.requests if "/resolve/" in request[1]]

    def downloads(self, filename: str) -> int:
        """How many GET requests asked for ``filename`` (of any repository and revision)."""
        return sum(1 for method, path, _ in self.file_requests() if method == "GET" and path.endswith("/" + filename))

    def answer(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body for a request of ``path``."""
        parts = path.split("?")[0].lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return 404, {"X-Error-Message": f"fake hub: no endpoint {path}"}, b""
        repo_id, revision, filename = f"{parts[0]}/{parts[1]}", unquote(parts[3]), unquote("/".join(parts[4:]))
        if repo_id not in self.commits:
            return 404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b""
        commit = self.branches[repo_id].get(revision, revision)
        if commit not in self.commits[repo_id]:
            return 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, b""
        files = self.commits[repo_id][commit]
        if filename not in files:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found",
                         "X-Repo-Commit": commit}, b""
        body = files[filename]
        headers = {"ETag": f'"{hashlib.sha256(body).hexdigest()}"', "X-Repo-Commit": commit,
                   "Content-Length": str(len(body)), "Content-Type": "application/octet-stream"}
        return 200, headers, body


def serve(hub: FakeHub) -> http.server.ThreadingHTTPServer:
    """Start serving ``hub`` on a free port of 127.0.0.1 (sets ``hub.endpoint``); ``shutdown()`` it after use."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _reply(self, send_body: bool) -> None:
            hub.requests.append((self.command, self.path, self.headers.get("Authorization")))
            status, headers, body = hub.answer(self.command, self.path)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if status != 200:
                self.send_header("Content-Length", "0")
            self.end_headers()
            if send_body and status == 200:
                self.wfile.write(body)

        def do_HEAD(self) -> None:  # noqa: N802 (http.server's names)
            self._reply(send_body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._reply(send_body=True)

        def log_message(self, *args) -> None:  # keep test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hub.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    return server
