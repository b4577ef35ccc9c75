"""TEST CODE: a tiny in-memory stand-in for the Hugging Face Hub on 127.0.0.1.

It speaks the few HTTP endpoints that ``huggingface_hub`` uses to create a repo, upload a folder as
regular (non-LFS) files and download it again: ``/api/repos/create``, ``validate-yaml``, ``preupload``, ``commit``,
``branch``, ``revision`` (repo info), ``tree``, and ``resolve`` (HEAD/GET). The real client code runs against it with
``HF_ENDPOINT`` pointing here. It is not a Hub implementation: no LFS/Xet, no auth beyond an optional
required token; branches and commits are kept in memory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse


class HubState:
    def __init__(self, required_token: str | None = None, fail_commits: bool = False) -> None:
        # (type, id) -> {"branches": {name: sha}, "commits": {sha: {path: bytes}}, "private": bool}
        self.repos: dict[tuple[str, str], dict] = {}
        self.required_token = required_token
        self.fail_commits = fail_commits
        self.lock = threading.Lock()


def _sha(files: dict[str, bytes], parent: str = "") -> str:
    h = hashlib.sha1(parent.encode())
    for path in sorted(files):
        h.update(path.encode() + b"\0" + files[path])
    return h.hexdigest()


def files_at(repo: dict, revision: str) -> dict[str, bytes] | None:
    """Files of a branch or a commit sha (None if neither exists)."""
    sha = repo["branches"].get(revision, revision)
    return repo["commits"].get(sha)


def head(repo: dict, revision: str) -> str:
    return repo["branches"].get(revision, revision)


class Handler(BaseHTTPRequestHandler):
    server_version = "FakeHub/0.1"
    state: HubState

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status, {"X-Error-Message": message})

    def _authorized(self) -> bool:
        if self.state.required_token is None:
            return True
        return self.headers.get("Authorization") == f"Bearer {self.state.required_token}"

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _repo(self, repo_type: str, repo_id: str):
        return self.state.repos.get((repo_type, repo_id))

    # -- routes ---------------------------------------------------------------------------------

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorized():
            return self._error(401, "Invalid credentials")
        path = urlparse(self.path).path
        if path == "/api/validate-yaml":  # card metadata check before a README upload
            self._body()
            return self._json({"errors": [], "warnings": []})
        if path == "/api/repos/create":
            payload = json.loads(self._body())
            repo_type = (payload.get("type") or "model")
            repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
            with self.state.lock:
                empty = _sha({})
                self.state.repos.setdefault((repo_type, repo_id), {"branches": {"main": empty}, "commits": {empty: {}},
                                                                   "private": payload.get("visibility") == "private"})
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            return self._json({"url": f"http://{self.headers['Host']}/{prefix}{repo_id}", "name": repo_id})
        m = re.match(r"^/api/(models|datasets)/(.+?)/(preupload|commit|branch)/([^/]+)$", path)
        if not m:
            return self._error(404, f"unknown route {path}")
        repo_type, repo_id, action, revision = m.group(1)[:-1], unquote(m.group(2)), m.group(3), unquote(m.group(4))
        repo = self._repo(repo_type, repo_id)
        if repo is None:
            return self._error(404, "Repository not found")
        if action == "branch":
            self._body()
            if revision in repo["branches"]:
                return self._error(409, "Branch already exists")
            repo["branches"][revision] = repo["branches"]["main"]
            return self._json({})
        if revision not in repo["branches"]:
            return self._error(404, f"Revision {revision} not found")
        if action == "preupload":
            files = json.loads(self._body())["files"]
            return self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                         for f in files]})
        if self.state.fail_commits:
            self._body()
            return self._error(500, "Internal Error (simulated)")
        with self.state.lock:
            files = dict(files_at(repo, revision))
            for line in self._body().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] in ("deletedFile", "deletedFolder"):
                    files.pop(item["value"]["path"], None)
                elif item["key"] == "lfsFile":
                    return self._error(400, "this test server only takes regular files")
            sha = _sha(files, head(repo, revision))
            repo["commits"][sha] = files
            repo["branches"][revision] = sha
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        host = self.headers["Host"]
        return self._json({"commitUrl": f"http://{host}/{prefix}{repo_id}/commit/{sha}",
                           "commitOid": sha, "pullRequestUrl": None})

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        path = unquote(url.path)
        m = re.match(r"^/api/(models|datasets)/(.+?)/revision/([^/]+)$", path)
        if m:
            repo_type, repo_id = m.group(1)[:-1], m.group(2)
            repo = self._repo(repo_type, repo_id)
            if repo is None or (repo["private"] and not self._authorized()):
                return self._error(404, "Repository not found")
            files = files_at(repo, m.group(3))
            if files is None:
                return self._json({"error": "Invalid rev id"}, 404, {"X-Error-Code": "RevisionNotFound"})
            return self._json({"id": repo_id, "sha": head(repo, m.group(3)), "private": repo["private"],
                               "siblings": [{"rfilename": p} for p in sorted(files)]})
        m = re.match(r"^/api/(models|datasets)/(.+?)/tree/([^/]+)(?:/(.*))?$", path)
        if m:
            repo_type, repo_id = m.group(1)[:-1], m.group(2)
            repo = self._repo(repo_type, repo_id)
            files = None if repo is None else files_at(repo, m.group(3))
            if files is None:
                return self._error(404, "Repository or revision not found")
            recursive = parse_qs(url.query).get("recursive", ["false"])[0].lower() == "true"
            entries = [{"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                       for p, b in sorted(files.items()) if recursive or "/" not in p]
            return self._json(entries)
        m = re.match(r"^/(?:(datasets)/)?(.+?)/resolve/([^/]+)/(.+)$", path)
        if m:
            repo_type = "dataset" if m.group(1) else "model"
            repo = self._repo(repo_type, m.group(2))
            if repo is None or (repo["private"] and not self._authorized()):
                return self._error(404, "Repository not found")
            files = files_at(repo, m.group(3)) or {}
            content = files.get(m.group(4))
            if content is None:
                return self._json({"error": "Entry not found"}, 404, {"X-Error-Code": "EntryNotFound"})
            self.send_response(200)
            self.send_header("Content-Length", str(len(content)))
            self.send_header("ETag", f'"{hashlib.sha1(content).hexdigest()}"')
            self.send_header("X-Repo-Commit", head(repo, m.group(3)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)
            return None
        return self._error(404, f"unknown route {path}")


class FakeHub:
    """Context manager: ``with FakeHub() as hub: hub.endpoint`` (e.g. ``http://127.0.0.1:54321``)."""

    def __init__(self, required_token: str | None = None, fail_commits: bool = False) -> None:
        self.state = HubState(required_token, fail_commits)
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
