"""TEST CODE: a tiny in-memory stand-in for the Hugging Face Hub on 127.0.0.1.

It speaks the HTTP endpoints that ``huggingface_hub`` (2.4) uses to create a repo, upload a folder and download it
again: ``/api/repos/create``, ``validate-yaml``, ``preupload``, ``commit``, ``branch``, ``revision`` (repo info),
``tree`` and ``resolve`` (HEAD/GET). The real client code runs against it with ``HF_ENDPOINT`` pointing here. It is
not a Hub implementation: no auth beyond an optional required token, no Xet, branches and commits in memory.

**Large files (git LFS).** With ``lfs_threshold=N``, ``preupload`` answers ``uploadMode: "lfs"`` for files of N
bytes or more (the Hub's own rule is per repo: ``.gitattributes`` patterns such as ``*.safetensors`` and
``*.parquet``, and a 10 MB cap on regular git files; here it is size only, so a test can pick a small N) and the
client then takes the LFS path, as it does against the Hub (without ``lfs_threshold``, the default, every file is
regular, as in the first version of this server):

1. ``POST /{prefix}{repo_id}.git/info/lfs/objects/batch`` (the git-LFS batch API): an upload action per object not
   yet stored (``basic`` transfer: one signed PUT URL; ``multipart`` when ``multipart_chunk_size`` is set and the
   object is larger: one signed URL per part in ``header`` with ``chunk_size``, and a signed completion URL as
   ``href``) plus a ``verify`` action; objects already stored get no actions and are not sent again.
2. The object PUT goes to a second server on another port, the stand-in for the S3 bucket / CDN. It is another
   origin, so the client does not send the Hub token there, exactly as with the real storage host; the URL
   carries a signature instead. The object is stored only when its sha256 and size match the oid it was
   announced as; a multipart upload is assembled by the completion POST, which checks every part's ETag.
3. ``POST .../info/lfs/objects/verify`` (with the token): the object exists with that size.
4. ``commit`` takes ``lfsFile`` lines (path, sha256 oid, size) only for stored objects, and refuses a regular
   ``file`` line at or above the threshold (the Hub rejects large non-LFS files too).
5. ``resolve`` of an LFS file answers 302 to the storage server with ``X-Linked-Etag`` (the sha256),
   ``X-Linked-Size`` and ``X-Repo-Commit``, as the Hub does; ``tree`` lists the ``lfs`` block of the entry.

**Why the client takes LFS and not Xet.** In ``huggingface_hub`` 2.4 the upload protocol is chosen on the client
only: ``_commit_api._upload_files`` and ``HfApi.upload_folder`` take Xet whenever ``is_xet_available()`` (``hf_xet``
is installed and ``HF_HUB_DISABLE_XET`` is not set) and never ask the server; the LFS batch response's
``transfer`` field is read but ignored. Nothing a server answers can steer an upload off Xet, so pushes in these
tests run with ``HF_HUB_DISABLE_XET=1`` (test_hub_lfs.py checks that without it the client goes to
``xet-write-token``, which this server does not speak). Downloads are the server's choice: the client takes Xet
only when ``resolve`` sends ``X-Xet-Hash``, which this server never does, so pulls need no setting.

**Faults** (for the interrupted-upload tests): ``fail_object_puts=k`` fails the first k object PUTs (-1: all) in
the way ``put_failure`` says: ``"disconnect"`` reads half the body and drops the connection (an interrupted
transfer), ``"500"`` answers a server error, ``"403"`` answers a refused (expired) signature. ``fail_commits``
fails every commit. Every request is logged in ``state.log`` as ``(route, method, status)``; ``FakeHub.count``
counts them by route, so a test can tell the LFS path from a silent fall-back to regular uploads.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import secrets
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse


@dataclass(frozen=True)
class LfsFile:
    """A file committed as an LFS pointer: the content lives in ``HubState.objects[oid]``."""

    oid: str  # sha256 of the content
    size: int

    @property
    def pointer(self) -> bytes:  # the git-lfs v1 pointer file that git would hold in place of the content
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.oid}\nsize {self.size}\n".encode()


@functools.lru_cache(maxsize=64)  # git knows its blobs' oids; do not rehash a 100 MB file on every HEAD
def git_blob_oid(content: bytes) -> str:
    """``git hash-object``: the oid git (and the Hub's ``tree``) gives a blob."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubState:
    def __init__(self, required_token: str | None = None, fail_commits: bool = False, lfs_threshold: int | None = None,
                 multipart_chunk_size: int | None = None, fail_object_puts: int = 0,
                 put_failure: str = "disconnect") -> None:
        if put_failure not in ("disconnect", "500", "403"):
            raise ValueError(f"put_failure must be 'disconnect', '500' or '403', got {put_failure!r}")
        # (type, id) -> {"branches": {name: sha}, "commits": {sha: {path: bytes | LfsFile}}, "private": bool}
        self.repos: dict[tuple[str, str], dict] = {}
        self.required_token = required_token
        self.fail_commits = fail_commits
        self.lfs_threshold = lfs_threshold
        self.multipart_chunk_size = multipart_chunk_size
        self.fail_object_puts = fail_object_puts
        self.put_failure = put_failure
        self.objects: dict[str, bytes] = {}  # LFS storage: sha256 -> content
        self.uploads: dict[str, dict] = {}  # signature -> {"oid", "size", "parts": {n: bytes}}
        self.log: list[tuple[str, str, int]] = []  # (route, method, status) of every request, both servers
        self.storage_saw_token = False  # an Authorization header reached the storage server
        self.storage_endpoint = ""
        self.lock = threading.Lock()


def _sha(files: dict, parent: str = "") -> str:
    h = hashlib.sha1(parent.encode())
    for path in sorted(files):
        item = files[path]
        h.update(path.encode() + b"\0" + (item.pointer if isinstance(item, LfsFile) else item))
    return h.hexdigest()


def files_at(repo: dict, revision: str) -> dict | None:
    """Files of a branch or a commit sha, ``{path: bytes | LfsFile}`` (None if neither exists)."""
    sha = repo["branches"].get(revision, revision)
    return repo["commits"].get(sha)


def head(repo: dict, revision: str) -> str:
    return repo["branches"].get(revision, revision)


def _prefix(repo_type: str) -> str:
    return "" if repo_type == "model" else f"{repo_type}s/"


class Handler(BaseHTTPRequestHandler):
    server_version = "FakeHub/0.2"
    state: HubState
    route = "unknown"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        with self.state.lock:
            self.state.log.append((self.route, self.command, code))
        super().send_response(code, message)

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", (headers or {}).pop("Content-Type", "application/json"))
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
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # a streamed body without a length
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _repo(self, repo_type: str, repo_id: str):
        return self.state.repos.get((repo_type, repo_id))

    def _content(self, item) -> bytes:
        return self.state.objects[item.oid] if isinstance(item, LfsFile) else item


class HubHandler(Handler):
    """The Hub's API and ``resolve``; LFS content itself goes through ``StorageHandler``."""

    def do_POST(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        path = url.path
        body = self._body()
        if path == "/api/complete_multipart":  # signed URL, called without the token (as on the Hub)
            self.route = "lfs_complete"
            return self._complete_multipart(parse_qs(url.query).get("sig", [""])[0], body)
        if not self._authorized():
            return self._error(401, "Invalid credentials")
        m = re.match(r"^/(?:(datasets)/)?(.+?)\.git/info/lfs/objects/(batch|verify)$", path)
        if m:
            self.route = f"lfs_{m.group(3)}"
            if self._repo("dataset" if m.group(1) else "model", m.group(2)) is None:
                return self._error(404, "Repository not found")
            return self._lfs_batch(m, body) if m.group(3) == "batch" else self._lfs_verify(body)
        if path == "/api/validate-yaml":  # card metadata check before a README upload
            self.route = "validate_yaml"
            return self._json({"errors": [], "warnings": []})
        if path == "/api/repos/create":
            self.route = "create_repo"
            payload = json.loads(body)
            repo_type = (payload.get("type") or "model")
            repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
            with self.state.lock:
                empty = _sha({})
                self.state.repos.setdefault((repo_type, repo_id), {"branches": {"main": empty}, "commits": {empty: {}},
                                                                   "private": payload.get("visibility") == "private"})
            return self._json({"url": f"http://{self.headers['Host']}/{_prefix(repo_type)}{repo_id}", "name": repo_id})
        m = re.match(r"^/api/(models|datasets)/(.+?)/(preupload|commit|branch|xet-write-token)/([^/]+)$", path)
        if not m:
            return self._error(404, f"unknown route {path}")
        repo_type, repo_id, action, revision = m.group(1)[:-1], unquote(m.group(2)), m.group(3), unquote(m.group(4))
        self.route = action.replace("-", "_")
        repo = self._repo(repo_type, repo_id)
        if repo is None:
            return self._error(404, "Repository not found")
        if action == "xet-write-token":
            return self._error(404, "this test server does not speak Xet")
        if action == "branch":
            if revision in repo["branches"]:
                return self._error(409, "Branch already exists")
            repo["branches"][revision] = repo["branches"]["main"]
            return self._json({})
        if revision not in repo["branches"]:
            return self._error(404, f"Revision {revision} not found")
        if action == "preupload":
            return self._preupload(repo, revision, json.loads(body)["files"])
        return self._commit(repo, repo_type, repo_id, revision, body)

    def _preupload(self, repo: dict, revision: str, files: list[dict]) -> None:
        threshold = self.state.lfs_threshold
        current = files_at(repo, revision)
        answer = []
        for f in files:
            lfs = threshold is not None and f["size"] >= threshold
            item = current.get(f["path"])
            # the oid of the file already there, so that the client can leave unchanged files out of the commit
            oid = None if item is None else item.oid if isinstance(item, LfsFile) else git_blob_oid(item)
            answer.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                           "oid": oid})
        return self._json({"files": answer})

    def _lfs_batch(self, m: re.Match, body: bytes) -> None:
        request = json.loads(body)
        if request.get("operation") != "upload" or request.get("hash_algo", "sha256") != "sha256":
            return self._error(400, "only sha256 uploads are supported")
        chunk = self.state.multipart_chunk_size
        host = self.headers["Host"]
        repo_url = f"http://{host}/{'datasets/' if m.group(1) else ''}{m.group(2)}.git/info/lfs/objects"
        objects, multipart = [], False
        for obj in request["objects"]:
            oid, size = obj.get("oid"), obj.get("size")
            if not (isinstance(oid, str) and re.fullmatch(r"[0-9a-f]{64}", oid) and isinstance(size, int)):
                objects.append({"oid": str(oid), "size": int(size or 0),
                                "error": {"code": 422, "message": "oid must be a sha256 and size an int"}})
                continue
            with self.state.lock:
                if oid in self.state.objects:  # already stored: nothing to send
                    objects.append({"oid": oid, "size": size})
                    continue
                sig = secrets.token_hex(8)
                self.state.uploads[sig] = {"oid": oid, "size": size, "parts": {}}
            storage = f"{self.state.storage_endpoint}/upload/{oid}"
            if chunk is not None and size > chunk and "multipart" in request.get("transfers", []):
                multipart = True
                n_parts = -(-size // chunk)
                header = {"chunk_size": str(chunk),
                          **{str(i): f"{storage}/part/{i}?sig={sig}" for i in range(1, n_parts + 1)}}
                upload = {"href": f"http://{host}/api/complete_multipart?sig={sig}", "header": header}
            else:
                upload = {"href": f"{storage}?sig={sig}"}
            objects.append({"oid": oid, "size": size, "authenticated": True,
                            "actions": {"upload": upload, "verify": {"href": f"{repo_url}/verify"}}})
        self._json({"transfer": "multipart" if multipart else "basic", "objects": objects, "hash_algo": "sha256"},
                   headers={"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_verify(self, body: bytes) -> None:
        request = json.loads(body)
        stored = self.state.objects.get(request.get("oid"))
        if stored is None:
            return self._error(404, f"object {request.get('oid')} was never uploaded")
        if len(stored) != request.get("size"):
            return self._error(422, f"object size is {len(stored)}, not {request.get('size')}")
        return self._json({})

    def _complete_multipart(self, sig: str, body: bytes) -> None:
        request = json.loads(body)
        with self.state.lock:
            upload = self.state.uploads.get(sig)
        if upload is None or upload["oid"] != request.get("oid"):
            return self._error(403, "bad signature")
        parts = upload["parts"]
        numbers = [p["partNumber"] for p in request.get("parts", [])]
        if numbers != list(range(1, len(parts) + 1)) or any(
                p["etag"] != parts[p["partNumber"]][1] for p in request["parts"]):
            return self._error(400, f"parts {numbers} or their etags do not match the {len(parts)} parts received")
        content = b"".join(parts[n][0] for n in numbers)
        if hashlib.sha256(content).hexdigest() != upload["oid"] or len(content) != upload["size"]:
            return self._error(400, "assembled object does not match its oid/size")
        with self.state.lock:
            self.state.objects[upload["oid"]] = content
            del self.state.uploads[sig]
        return self._json({})

    def _commit(self, repo: dict, repo_type: str, repo_id: str, revision: str, body: bytes) -> None:
        if self.state.fail_commits:
            return self._error(500, "Internal Error (simulated)")
        threshold = self.state.lfs_threshold
        with self.state.lock:
            files = dict(files_at(repo, revision))
            for line in body.splitlines():
                item = json.loads(line)
                value = item["value"]
                if item["key"] == "file":
                    content = base64.b64decode(value["content"])
                    if threshold is not None and len(content) >= threshold:
                        return self._error(400, f"{value['path']} is {len(content)} bytes: files of {threshold} "
                                                "bytes or more must be uploaded with LFS")
                    files[value["path"]] = content
                elif item["key"] in ("deletedFile", "deletedFolder"):
                    files.pop(value["path"], None)
                elif item["key"] == "lfsFile":
                    stored = self.state.objects.get(value["oid"])
                    if stored is None or len(stored) != value.get("size", len(stored)):
                        return self._error(422, f"LFS pointer {value['path']} points to an object that was not "
                                                "uploaded")
                    files[value["path"]] = LfsFile(value["oid"], len(stored))
            sha = _sha(files, head(repo, revision))
            repo["commits"][sha] = files
            repo["branches"][revision] = sha
        host = self.headers["Host"]
        return self._json({"commitUrl": f"http://{host}/{_prefix(repo_type)}{repo_id}/commit/{sha}",
                           "commitOid": sha, "pullRequestUrl": None})

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        path = unquote(url.path)
        if re.match(r"^/api/(models|datasets)/(.+?)/xet-(write|read)-token(/.*)?$", path):
            self.route = "xet_write_token" if "/xet-write-token" in path else "xet_read_token"
            return self._error(404, "this test server does not speak Xet")
        m = re.match(r"^/api/(models|datasets)/(.+?)/revision/([^/]+)$", path)
        if m:
            self.route = "revision"
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
            self.route = "tree"
            repo_type, repo_id = m.group(1)[:-1], m.group(2)
            repo = self._repo(repo_type, repo_id)
            files = None if repo is None else files_at(repo, m.group(3))
            if files is None:
                return self._error(404, "Repository or revision not found")
            recursive = parse_qs(url.query).get("recursive", ["false"])[0].lower() == "true"
            return self._json([self._tree_entry(p, item) for p, item in sorted(files.items())
                               if recursive or "/" not in p])
        m = re.match(r"^/(?:(datasets)/)?(.+?)/resolve/([^/]+)/(.+)$", path)
        if m:
            self.route = "resolve"
            repo_type = "dataset" if m.group(1) else "model"
            repo = self._repo(repo_type, m.group(2))
            if repo is None or (repo["private"] and not self._authorized()):
                return self._error(404, "Repository not found")
            item = (files_at(repo, m.group(3)) or {}).get(m.group(4))
            if item is None:
                return self._json({"error": "Entry not found"}, 404, {"X-Error-Code": "EntryNotFound"})
            if isinstance(item, LfsFile):  # the Hub redirects LFS content to its storage host
                self.send_response(302)
                self.send_header("Location", f"{self.state.storage_endpoint}/objects/{item.oid}")
                self.send_header("X-Linked-Etag", f'"{item.oid}"')
                self.send_header("X-Linked-Size", str(item.size))
                self.send_header("ETag", f'"{git_blob_oid(item.pointer)}"')
                self.send_header("X-Repo-Commit", head(repo, m.group(3)))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            self.send_response(200)
            self.send_header("Content-Length", str(len(item)))
            self.send_header("ETag", f'"{git_blob_oid(item)}"')
            self.send_header("X-Repo-Commit", head(repo, m.group(3)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(item)
            return None
        self.route = f"unknown {path}"
        return self._error(404, f"unknown route {path}")

    @staticmethod
    def _tree_entry(path: str, item) -> dict:
        if isinstance(item, LfsFile):
            return {"type": "file", "path": path, "size": item.size, "oid": git_blob_oid(item.pointer),
                    "lfs": {"oid": item.oid, "size": item.size, "pointerSize": len(item.pointer)}}
        return {"type": "file", "path": path, "size": len(item), "oid": git_blob_oid(item)}


class StorageHandler(Handler):
    """The stand-in for the LFS object store (S3 / CDN): signed PUTs in, object GETs out. No Hub token."""

    def _note_token(self) -> None:
        if self.headers.get("Authorization"):
            with self.state.lock:
                self.state.storage_saw_token = True

    def _inject_put_failure(self) -> bool:
        with self.state.lock:
            left = self.state.fail_object_puts
            if left == 0:
                return False
            if left > 0:
                self.state.fail_object_puts -= 1
        if self.state.put_failure == "disconnect":  # half the body arrives, then the connection drops
            length = int(self.headers.get("Content-Length", 0))
            self.rfile.read(length // 2)
            with self.state.lock:
                self.state.log.append((self.route, self.command, 0))  # 0: no response, the connection dropped
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        elif self.state.put_failure == "500":
            self._body()
            self._error(500, "Internal Error (simulated)")
        else:
            self._body()
            self._error(403, "Request has expired (simulated)")
        return True

    def do_PUT(self) -> None:  # noqa: N802
        self._note_token()
        url = urlparse(self.path)
        m = re.match(r"^/upload/([0-9a-f]{64})(?:/part/(\d+))?$", url.path)
        self.route = "lfs_part_put" if m and m.group(2) else "lfs_put"
        sig = parse_qs(url.query).get("sig", [""])[0]
        with self.state.lock:
            upload = self.state.uploads.get(sig)
        if m is None or upload is None or upload["oid"] != m.group(1):
            self._body()
            return self._error(403, "bad signature")
        if self._inject_put_failure():
            return None
        content = self._body()
        if m.group(2):  # one part of a multipart upload
            etag = f'"{hashlib.md5(content).hexdigest()}"'
            with self.state.lock:
                upload["parts"][int(m.group(2))] = (content, etag)
            return self._json({}, headers={"ETag": etag})
        if hashlib.sha256(content).hexdigest() != upload["oid"] or len(content) != upload["size"]:
            return self._error(400, "content does not match its oid/size")
        with self.state.lock:
            self.state.objects[upload["oid"]] = content
            del self.state.uploads[sig]
        return self._json({}, headers={"ETag": f'"{upload["oid"]}"'})

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        self._note_token()
        self.route = "storage_get"
        m = re.match(r"^/objects/([0-9a-f]{64})$", urlparse(self.path).path)
        content = self.state.objects.get(m.group(1)) if m else None
        if content is None:
            return self._error(404, "NoSuchKey")
        self.send_response(200)
        self.send_header("Content-Length", str(len(content)))
        self.send_header("ETag", f'"{m.group(1)}"')
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)
        return None


class FakeHub:
    """Context manager: ``with FakeHub() as hub: hub.endpoint`` (e.g. ``http://127.0.0.1:54321``).

    Keyword arguments go to ``HubState`` (``required_token``, ``fail_commits``, ``lfs_threshold``,
    ``multipart_chunk_size``, ``fail_object_puts``, ``put_failure``). ``hub.storage_endpoint`` is the LFS object store.
    """

    def __init__(self, required_token: str | None = None, fail_commits: bool = False, **lfs) -> None:
        self.state = HubState(required_token, fail_commits, **lfs)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), type("BoundHub", (HubHandler,), {"state": self.state}))
        self.storage = ThreadingHTTPServer(("127.0.0.1", 0),
                                           type("BoundStorage", (StorageHandler,), {"state": self.state}))
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.storage_endpoint = self.state.storage_endpoint = f"http://127.0.0.1:{self.storage.server_address[1]}"
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (self.server, self.storage)]

    def __enter__(self) -> FakeHub:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        for s in (self.server, self.storage):
            s.shutdown()
            s.server_close()

    def count(self, route: str, status: int | None = None) -> int:
        """How many requests reached ``route`` (e.g. ``"lfs_batch"``, ``"lfs_put"``), with ``status`` if given."""
        with self.state.lock:
            return sum(1 for r, _, s in self.state.log if r == route and (status is None or s == status))

    def files(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The content of every file at ``revision``, LFS pointers resolved from the object store."""
        files = files_at(self.state.repos[(repo_type, repo_id)], revision)
        return {p: self.state.objects[i.oid] if isinstance(i, LfsFile) else i for p, i in files.items()}

    def lfs_paths(self, repo_type: str, repo_id: str, revision: str = "main") -> set[str]:
        files = files_at(self.state.repos[(repo_type, repo_id)], revision)
        return {p for p, item in files.items() if isinstance(item, LfsFile)}


__all__ = ["FakeHub", "HubState", "LfsFile", "files_at", "git_blob_oid", "head"]
