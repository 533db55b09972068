"""OUR OWN FAKE of the Globus Transfer and Auth services — not Globus, not globus-sdk's.

A small in-process stand-in that lets the real :class:`globus_sdk.TransferClient`
drive whole ingests and publications with no network. Collection ids map to
temporary folders; a submitted transfer really copies the files (and checks
the external SHA-256 checksums it was given), so the files a test finds on
"scratch" got there through the real client's requests. Documents are shaped
after the Transfer API (v0.10) reference: ``file_list``, ``transfer_result``,
``task``, ``successful_transfer``, ``skipped_error``, ``event``.

Two ways in:

- :meth:`FakeGlobus.install` registers it as a ``responses`` callback on the
  production URLs (unit tests in this process);
- :meth:`FakeGlobus.serve` runs it as a localhost HTTP server and returns the
  environment (``GLOBUS_SDK_SERVICE_URL_TRANSFER`` / ``_AUTH``) that points the
  SDK at it: Snakemake runs each rule's script in a new Python process, which
  ``responses`` (patching this process only) cannot reach.

Faults are injected with :meth:`FakeGlobus.fail_next` (HTTP status and error
document for the next N matching requests) and by scripting task states.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

TRANSFER_RS = "transfer.api.globus.org"


class FakeGlobus:
    """Fake Transfer + Auth service over folders (see module docstring)."""

    def __init__(self, collections: dict[str, Path], *,
                 client_id: str = "0e5b2c9a-1111-4222-8333-444455556666",
                 client_secret: str = "fake-secret"):
        self.collections = {k: Path(v) for k, v in collections.items()}
        self.client_id, self.client_secret = client_id, client_secret
        self.tokens: set[str] = set()
        self.refresh_tokens: set[str] = set()
        self.tasks: dict[str, dict] = {}
        self.submissions: dict[str, str] = {}
        self.task_files: dict[str, list[dict]] = {}
        self.task_skipped: dict[str, list[dict]] = {}
        self.task_events: dict[str, list[dict]] = {}
        self.status_plan: list[dict] = [{"status": "SUCCEEDED"}]
        self.plans: dict[str, list[dict]] = {}
        self.extra_listing: list[dict] = []
        self.consent_missing: set[str] = set()
        self.pause_info: dict = {}
        self.faults: list[list] = []
        self.log: list[list] = []  # [method, path, status] per request
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ controls

    def fail_next(self, method: str, path_regex: str, status: int, doc: dict | None = None,
                  times: int = 1, headers: dict | None = None) -> None:
        """Answer the next ``times`` requests matching with ``status`` and ``doc``."""
        doc = doc or {"code": "ServiceUnavailable" if status == 503 else "RequestLimitExceeded",
                      "message": f"injected {status}", "request_id": "fake"}
        self.faults.append([method, re.compile(path_regex), status, doc, times, headers or {}])

    def submitted(self) -> list[dict]:
        return [t for t in self.tasks.values()]

    def requests_to(self, method: str, pattern: str, status: int | None = None) -> int:
        """How many requests matched (optionally: answered with ``status``)."""
        rx = re.compile(pattern)
        return sum(1 for m, p, st in self.log
                   if m == method and rx.search(p) and status in (None, st))

    # ------------------------------------------------------------------ helpers

    def _folder(self, coll: str, path: str) -> Path:
        root = self.collections[coll].resolve()
        p = (root / path.lstrip("/")).resolve()
        if p != root and root not in p.parents:
            raise PermissionError(path)
        return p

    @staticmethod
    def _err(status: int, code: str, message: str):
        return status, {"code": code, "message": message, "request_id": "fake",
                        "resource": "fake"}

    def _authorized(self, headers) -> bool:
        auth = headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.tokens

    # ------------------------------------------------------------------ dispatch

    def handle(self, method: str, url: str, headers, body: bytes | str | None):
        """Return (status, headers, body text) for one request."""
        u = urlparse(url)
        path = u.path
        query = {k: v[0] for k, v in parse_qs(u.query).items()}
        if isinstance(body, bytes):
            body = body.decode()
        with self.lock:
            entry = [method, path, None]
            self.log.append(entry)
            for f in self.faults:
                if f[4] > 0 and f[0] == method and f[1].search(path):
                    f[4] -= 1
                    entry[2] = f[2]
                    return f[2], {"Content-Type": "application/json", "Retry-After": "0", **f[5]}, \
                        json.dumps(f[3])
            if path.startswith("/v2/oauth2/"):
                status, doc = self._auth(path, headers, body or "")
            else:
                if not self._authorized(headers):
                    status, doc = self._err(401, "AuthenticationFailed", "Token is not active")
                else:
                    status, doc = self._transfer(method, path.replace("/v0.10", "", 1), query,
                                                 json.loads(body) if body else None)
            entry[2] = status
        return status, {"Content-Type": "application/json"}, json.dumps(doc)

    # ------------------------------------------------------------------ auth

    def issue(self) -> tuple[str, str]:
        """A fresh (access, refresh) token pair for the transfer resource server."""
        at, rt = f"fake-at-{uuid.uuid4().hex}", f"fake-rt-{uuid.uuid4().hex}"
        self.tokens.add(at)
        self.refresh_tokens.add(rt)
        return at, rt

    def _auth(self, path: str, headers, body: str):
        form = {k: v[0] for k, v in parse_qs(body).items()}
        if path.endswith("/token/revoke"):
            self.tokens.discard(form.get("token"))
            self.refresh_tokens.discard(form.get("token"))
            return 200, {"active": False}
        grant = form.get("grant_type")
        if grant == "client_credentials":
            basic = headers.get("Authorization", "")
            cid, _, secret = base64.b64decode(basic[6:]).decode().partition(":") \
                if basic.startswith("Basic ") else ("", "", "")
            if (cid, secret) != (self.client_id, self.client_secret):
                return 401, {"error": "invalid_client", "errors": [{"code": "invalid_client"}]}
            scopes = form.get("scope", "")
            at, _ = self.issue()
            doc = {"access_token": at, "scope": scopes, "expires_in": 172800,
                   "token_type": "Bearer", "resource_server": TRANSFER_RS, "other_tokens": []}
            if "openid" in scopes.split():
                doc["other_tokens"].append({
                    "access_token": f"fake-auth-{uuid.uuid4().hex}", "scope": "openid",
                    "expires_in": 172800, "token_type": "Bearer",
                    "resource_server": "auth.globus.org"})
            return 200, doc
        if grant == "refresh_token":
            if form.get("refresh_token") not in self.refresh_tokens:
                return 400, {"error": "invalid_grant",
                             "errors": [{"code": "invalid_grant", "title": "invalid_grant"}]}
            at, rt = self.issue()
            return 200, {"access_token": at, "refresh_token": rt,
                         "scope": f"urn:globus:auth:scope:{TRANSFER_RS}:all",
                         "expires_in": 172800, "token_type": "Bearer",
                         "resource_server": TRANSFER_RS, "other_tokens": []}
        return 400, {"error": "unsupported_grant_type"}

    # ------------------------------------------------------------------ transfer

    def _transfer(self, method, path, query, doc):
        m = re.fullmatch(r"/operation/endpoint/([^/]+)/(ls|mkdir)", path)
        if m:
            coll, op = m.groups()
            if coll not in self.collections:
                return self._err(404, "ClientError.NotFound", f"Collection {coll} not found")
            if coll in self.consent_missing:
                return 403, {"code": "ConsentRequired", "message": "Missing required data_access "
                             "consent", "request_id": "fake",
                             "required_scopes": [f"urn:globus:auth:scope:{TRANSFER_RS}:all"
                                                 f"[*https://auth.globus.org/scopes/{coll}/"
                                                 "data_access]"]}
            return self._ls(coll, query) if op == "ls" else self._mkdir(coll, doc["path"])
        if path == "/submission_id":
            return 200, {"DATA_TYPE": "submission_id", "value": str(uuid.uuid4())}
        if path == "/transfer" and method == "POST":
            return self._submit(doc)
        m = re.fullmatch(r"/task/([^/]+)(?:/(successful_transfers|skipped_errors|event_list|"
                         r"pause_info))?", path)
        if m:
            tid, sub = m.groups()
            if tid not in self.tasks:
                return self._err(404, "TaskNotFound", f"Task {tid} not found")
            if sub is None:
                plan = self.plans.get(tid, [])
                if len(plan) > 1:
                    self.tasks[tid].update(plan.pop(0))
                elif plan:
                    self.tasks[tid].update(plan[0])
                return 200, self.tasks[tid]
            if sub == "successful_transfers":
                return 200, {"DATA_TYPE": "successful_transfers", "marker": 0,
                             "next_marker": None, "DATA": self.task_files[tid]}
            if sub == "skipped_errors":
                return 200, {"DATA_TYPE": "skipped_errors", "marker": 0, "next_marker": None,
                             "DATA": self.task_skipped[tid]}
            if sub == "event_list":
                ev = self.task_events.get(tid, [])
                if query.get("filter") == "is_error:1":
                    ev = [e for e in ev if e["is_error"]]
                return 200, {"DATA_TYPE": "event_list", "offset": 0, "limit": 10,
                             "total": len(ev), "has_next_page": False, "DATA": ev}
            return 200, {"DATA_TYPE": "pause_info_limited", "pause_rules": [],
                         "message_from_admin": None, **self.pause_info}
        return self._err(404, "ClientError.NotFound", f"no route {method} {path}")

    def _ls(self, coll, query):
        try:
            folder = self._folder(coll, query.get("path", "/"))
        except PermissionError:
            return self._err(403, "ClientError.PermissionDenied", "outside the collection")
        if not folder.is_dir():
            return self._err(404, "ClientError.NotFound",
                             f"Directory '{query.get('path')}' not found")
        items = [{"DATA_TYPE": "file", "name": p.name, "type": "dir" if p.is_dir() else "file",
                  "size": p.stat().st_size, "permissions": "0644", "user": "fake",
                  "group": "fake", "last_modified": "2026-11-24 00:00:00+00:00",
                  "link_target": None}
                 for p in sorted(folder.iterdir())] + list(self.extra_listing)
        offset, limit = int(query.get("offset", 0)), int(query.get("limit", 100000))
        page = items[offset:offset + limit]
        return 200, {"DATA_TYPE": "file_list", "path": query.get("path", "/"),
                     "endpoint": coll, "length": len(page), "total": len(items),
                     "offset": offset, "limit": limit,
                     "has_next_page": offset + len(page) < len(items), "DATA": page}

    def _mkdir(self, coll, path):
        folder = self._folder(coll, path)
        if folder.exists():
            return 502, {"code": "ExternalError.MkdirFailed.Exists",
                         "message": f"Path already exists, Error Path '{path}'",
                         "request_id": "fake", "resource": "mkdir"}
        if not folder.parent.is_dir():
            return self._err(404, "ClientError.NotFound", f"parent of {path} not found")
        folder.mkdir()
        return 202, {"DATA_TYPE": "mkdir_result", "code": "DirectoryCreated",
                     "message": "The directory was created successfully", "request_id": "fake",
                     "resource": "mkdir"}

    def _submit(self, doc):
        sid = doc.get("submission_id")
        if sid in self.submissions:
            tid = self.submissions[sid]
            return 200, {"DATA_TYPE": "transfer_result", "code": "Duplicate",
                         "message": "A transfer with id '%s' was already submitted" % tid,
                         "submission_id": sid, "task_id": tid, "request_id": "fake",
                         "resource": "/transfer"}
        src, dst = doc["source_endpoint"], doc["destination_endpoint"]
        tid = str(uuid.uuid4())
        done, skipped = [], []
        for item in doc["DATA"]:
            try:
                s = self._folder(src, item["source_path"])
                d = self._folder(dst, item["destination_path"])
            except PermissionError:
                skipped.append(self._skip(item, "PERMISSION_DENIED", "outside the collection"))
                continue
            if not s.is_file():
                if not doc.get("skip_source_errors"):
                    return self._err(400, "ClientError.BadRequest", f"{item['source_path']} "
                                     "not found")
                skipped.append(self._skip(item, "FILE_NOT_FOUND", "No such file"))
                continue
            data = s.read_bytes()
            ext = item.get("external_checksum")
            if ext and hashlib.sha256(data).hexdigest() != ext:
                skipped.append(self._skip(item, "CHECKSUM_MISMATCH", "external checksum"))
                continue
            if d.exists() and d.read_bytes() == data and doc.get("sync_level") in (3, "checksum"):
                continue  # sync level checksum: already in place
            d.parent.mkdir(parents=True, exist_ok=True)
            if d.exists():
                d.chmod(0o644)
            shutil.copyfile(s, d)
            done.append({"DATA_TYPE": "successful_transfer", "source_path": item["source_path"],
                         "destination_path": item["destination_path"]})
        self.submissions[sid] = tid
        self.task_files[tid], self.task_skipped[tid] = done, skipped
        self.tasks[tid] = {
            "DATA_TYPE": "task", "task_id": tid, "type": "TRANSFER", "status": "ACTIVE",
            "label": doc.get("label"), "source_endpoint_id": src,
            "destination_endpoint_id": dst, "deadline": doc.get("deadline"),
            "sync_level": doc.get("sync_level"), "verify_checksum": doc.get("verify_checksum"),
            "files": len(doc["DATA"]), "files_transferred": len(done),
            "files_skipped": len(skipped), "faults": 0, "is_paused": False,
            "nice_status": "Queued", "request_time": "2026-11-24T00:00:00+00:00",
            "fatal_error": None, "skip_source_errors": doc.get("skip_source_errors")}
        self.task_events[tid] = []
        self.plans[tid] = [dict(p) for p in self.status_plan]
        return 202, {"DATA_TYPE": "transfer_result", "code": "Accepted",
                     "message": "The transfer has been accepted and a task has been created "
                                "and queued for execution",
                     "submission_id": sid, "task_id": tid, "request_id": "fake",
                     "resource": "/transfer",
                     "task_link": {"DATA_TYPE": "link", "href": f"/v0.10/task/{tid}?format=json",
                                   "rel": "related", "resource": "task",
                                   "title": "related task"}}

    @staticmethod
    def _skip(item, code, details):
        return {"DATA_TYPE": "skipped_error", "source_path": item["source_path"],
                "destination_path": item["destination_path"], "error_code": code,
                "error_details": details, "error_time": "2026-11-24T00:00:00+00:00",
                "is_directory": False, "is_symlink": False}

    # ------------------------------------------------------------------ wiring

    def install(self, rsps) -> None:
        """Register on a ``responses.RequestsMock`` for the production URLs."""

        def cb(request):
            status, headers, text = self.handle(request.method, request.url, request.headers,
                                                request.body)
            return status, headers, text

        for method in ("GET", "POST", "PUT", "DELETE"):
            rsps.add_callback(method, re.compile(r"https://transfer\.api\.globus\.org/.*"), cb)
            rsps.add_callback(method, re.compile(r"https://auth\.globus\.org/.*"), cb)

    def serve(self):
        """Serve on 127.0.0.1; return (server, environment for the SDK)."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                status, headers, text = fake.handle(self.command, self.path, self.headers, body)
                data = text.encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        return server, {"GLOBUS_SDK_SERVICE_URL_TRANSFER": url,
                        "GLOBUS_SDK_SERVICE_URL_AUTH": url}
