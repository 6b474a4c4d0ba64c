"""A small stand-in for the Hugging Face Hub on 127.0.0.1, for tests: the endpoints huggingface_hub calls to
download (repo info, tree listing, file HEAD + GET with Range) and to upload (create repo, preupload, commit with
regular, base64-inline files), with the headers and error codes it reads (X-Repo-Commit, ETag, Content-Length,
X-Error-Code: RepoNotFound / GatedRepo / RevisionNotFound / EntryNotFound). Point HF_ENDPOINT at `url` and the
real client runs unchanged.

`cut[path] = n` makes the next n GETs of that file send half the body and close the connection (a download cut
halfway). `log` records (method, path) of every request.
"""
from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse


@dataclass
class Repo:
    files: dict[str, bytes]
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)    # sha -> files
    refs: dict[str, str] = field(default_factory=dict)                    # branch / tag -> sha
    token: str | None = None                                              # gated: this token only
    private: bool = False


class _Quiet(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass                                # a client gone mid-answer (a cut download, stop()) is expected


def _sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


class FakeHub:
    def __init__(self):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.cut: dict[str, int] = {}
        self.log: list[tuple[str, str]] = []
        self._connections: list[socket.socket] = []
        self._server = _Quiet(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        """Gone, as a Hub that cannot be reached: no new connection, and the open keep-alive ones closed."""
        self._server.shutdown()
        self._server.server_close()
        for conn in self._connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def add(self, repo_id: str, files: dict[str, bytes], repo_type: str = "model", tags=(), token=None,
            private=False) -> str:
        """A repo whose `main` (and each tag) is one commit holding `files`; returns the commit sha."""
        sha = _sha(repo_id.encode() + b"".join(k.encode() + v for k, v in sorted(files.items())))
        repo = Repo(files=dict(files), commits={sha: dict(files)}, refs={"main": sha, **{t: sha for t in tags}},
                    token=token, private=private)
        self.repos[(repo_type, repo_id)] = repo
        return sha

    # ------------------------------------------------------------------------------------------ routing
    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                hub._connections.append(self.connection)

            def do_HEAD(self):
                self._route("HEAD")

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            # -------------------------------------------------------------------- helpers
            def _send(self, status, body=b"", headers=None, head=False):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head and body:
                    self.wfile.write(body)

            def _json(self, obj, status=200, headers=None):
                self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

            def _error(self, status, code, head=False, headers=None):
                self._send(status, b"" if head else json.dumps({"error": code}).encode(),
                           {"X-Error-Code": code, "X-Error-Message": code, **(headers or {})}, head=head)

            def _repo(self, repo_type, repo_id, head=False):
                repo = hub.repos.get((repo_type, repo_id))
                auth = self.headers.get("Authorization", "")
                if repo is None or (repo.private and auth != f"Bearer {repo.token}"):
                    self._error(401 if repo is None or not auth else 404, "RepoNotFound", head)
                    return None
                if repo.token and not repo.private and auth != f"Bearer {repo.token}":
                    self._error(401 if not auth else 403, "GatedRepo", head)
                    return None
                return repo

            def _commit(self, repo, rev, head=False):
                sha = repo.refs.get(rev) or (rev if rev in repo.commits else None)
                if sha is None:
                    self._error(404, "RevisionNotFound", head)
                return sha

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            # -------------------------------------------------------------------- endpoints
            def _route(self, method):
                url = urlparse(self.path)
                parts = [unquote(p) for p in url.path.strip("/").split("/")]
                hub.log.append((method, url.path))
                if parts[:1] == ["api"]:
                    return self._api(method, parts[1:], parse_qs(url.query))
                repo_type = "model"
                if parts[:1] in (["datasets"], ["models"]):
                    repo_type, parts = parts[0][:-1], parts[1:]
                if len(parts) >= 5 and parts[2] == "resolve" and method in ("HEAD", "GET"):
                    return self._resolve(method, repo_type, "/".join(parts[:2]), parts[3], "/".join(parts[4:]))
                self._error(404, "NotFound", method == "HEAD")

            def _resolve(self, method, repo_type, repo_id, rev, path):
                head = method == "HEAD"
                repo = self._repo(repo_type, repo_id, head)
                if repo is None:
                    return
                sha = self._commit(repo, rev, head)
                if sha is None:
                    return
                data = repo.commits[sha].get(path)
                if data is None:
                    return self._error(404, "EntryNotFound", head, {"X-Repo-Commit": sha})
                headers = {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                           "Accept-Ranges": "bytes"}
                if head:
                    self.send_response(200)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    return
                start = 0
                rng = self.headers.get("Range", "")
                if rng.startswith("bytes=") and rng[6:].split("-")[0].isdigit():
                    start = int(rng[6:].split("-")[0])
                body = data[start:]
                self.send_response(206 if start else 200)
                for k, v in headers.items():
                    self.send_header(k, v)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if hub.cut.get(path, 0) > 0:           # half the body, then the connection goes away
                    hub.cut[path] -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def _api(self, method, parts, query):
                if parts == ["repos", "create"] and method == "POST":
                    req = json.loads(self._body() or b"{}")
                    repo_id = f"{req.get('organization') or 'user'}/{req['name']}"
                    key = (req.get("type") or "model", repo_id)
                    if key not in hub.repos:
                        private = bool(req.get("private")) or req.get("visibility") == "private"   # 0.x / 1.x
                        hub.repos[key] = Repo(files={}, commits={}, refs={}, private=private,
                                              token=self.headers.get("Authorization", "")[7:] or None)
                    return self._json({"url": f"{hub.url}/{repo_id}", "name": repo_id})
                if parts == ["validate-yaml"] and method == "POST":      # the model card's metadata block
                    self._body()
                    return self._json({"errors": [], "warnings": []})
                if len(parts) < 4 or parts[0] not in ("models", "datasets"):
                    return self._error(404, "NotFound", method == "HEAD")
                repo_type, repo_id, action = parts[0][:-1], "/".join(parts[1:3]), parts[3]
                rev = "/".join(parts[4:]) or "main"
                if action in ("preupload", "commit") and method == "POST":
                    repo = hub.repos.get((repo_type, repo_id))
                    if repo is None:
                        return self._error(404, "RepoNotFound")
                    body = self._body()
                    if action == "preupload":
                        files = json.loads(body)["files"]
                        return self._json({"files": [{"path": f["path"], "uploadMode": "regular",
                                                      "shouldIgnore": False} for f in files]})
                    files = dict(repo.commits.get(repo.refs.get("main", ""), {}))
                    for line in body.splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    sha = _sha(repo_id.encode() + b"".join(k.encode() + v for k, v in sorted(files.items())))
                    repo.commits[sha], repo.refs["main"], repo.files = files, sha, files
                    return self._json({"commitUrl": f"{hub.url}/{repo_id}/commit/{sha}", "commitOid": sha,
                                       "pullRequestUrl": None})
                repo = self._repo(repo_type, repo_id)
                if repo is None:
                    return
                if action == "revision":
                    sha = self._commit(repo, rev)
                    if sha is None:
                        return
                    files = repo.commits[sha]
                    return self._json({"id": repo_id, "sha": sha, "private": repo.private,
                                       "siblings": [{"rfilename": f} for f in sorted(files)]})
                if action == "tree":
                    sha = self._commit(repo, parts[4])
                    if sha is None:
                        return
                    files = repo.commits[sha]
                    return self._json([{"type": "file", "path": f, "size": len(b), "oid": _sha(b)}
                                       for f, b in sorted(files.items())])
                self._error(404, "NotFound")

        return Handler
