"""A stand-in for a provider's Batch API on 127.0.0.1 (``/v1/files``, ``/v1/batches``), for the
``teacher.dispatch: batch`` tests and the reliability suite. It answers each request line with the
completion ``tests/flaky_server.py`` gives the same body synchronously, so a cache made through
batches can be compared record by record with one made request by request. It listens on the
loopback address only, stops by itself after ``lifetime_s`` and counts what it was asked.

A batch moves validating -> in_progress -> its end after ``polls`` status checks. Knobs:
``fail_ids`` (custom_ids answered with an error line), ``end`` ("completed", "expired": only the
first half of the lines answered, "cancelled", "failed": none), ``no_logprobs`` (answers without
logprobs), ``bad_body_ids`` (a 200 line whose body is not a completion), ``api_key`` (required).
"""

from __future__ import annotations

import contextlib
import email.parser
import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from flaky_server import FlakyServer


class FakeBatchAPI:
    def __init__(self, *, polls: int = 2, lifetime_s: float = 120.0, api_key: str | None = None) -> None:
        self.polls, self.api_key = polls, api_key
        self.fail_ids: set[str] = set()
        self.bad_body_ids: set[str] = set()
        self.end = "completed"
        self.no_logprobs = False
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.checks: dict[str, int] = {}
        self.calls: list[tuple[str, str]] = []
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    api.handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    api.handle(self, "POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # loopback only
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.timer = threading.Timer(lifetime_s, self.close)
        self.timer.daemon = True
        self.timer.start()

    def count(self, method: str, prefix: str) -> int:
        return sum(1 for m, p in self.calls if m == method and p.startswith(prefix))

    # --- requests ------------------------------------------------------------------------

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        path = url.path.removeprefix("/v1")
        with self.lock:
            self.calls.append((method, path))
        if self.api_key and h.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self.send(h, 401, {"error": {"message": "bad key"}})
        data = h.rfile.read(int(h.headers.get("Content-Length") or 0)) if method == "POST" else b""
        with self.lock:
            if method == "POST" and path == "/files":
                return self.send(h, 200, self.upload(h.headers["Content-Type"], data))
            if method == "POST" and path == "/batches":
                return self.send(h, 200, self.create(json.loads(data)))
            if method == "GET" and path == "/batches":
                query = parse_qs(url.query)
                return self.send(
                    h, 200, self.listing(int(query.get("limit", ["20"])[0]), query.get("after", [None])[0])
                )
            if method == "GET" and path.startswith("/batches/"):
                return self.send(h, 200, self.check(path.split("/")[2]))
            if method == "GET" and path.startswith("/files/") and path.endswith("/content"):
                return self.send_bytes(h, self.files[path.split("/")[2]])
        return self.send(h, 404, {"error": {"message": f"no route {method} {path}"}})

    def upload(self, content_type: str, data: bytes) -> dict:
        message = email.parser.BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + data)
        parts = {p.get_param("name", header="content-disposition"): p.get_payload(decode=True) for p in message.walk()}
        assert parts.get("purpose") == b"batch", parts.keys()
        file_id = f"file-{next(self.ids)}"
        self.files[file_id] = parts["file"]
        return {"id": file_id, "object": "file", "purpose": "batch", "bytes": len(parts["file"])}

    def create(self, body: dict) -> dict:
        batch_id = f"batch_{next(self.ids)}"
        self.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body["endpoint"],
            "input_file_id": body["input_file_id"],
            "completion_window": body["completion_window"],
            "metadata": body.get("metadata") or {},
            "status": "validating",
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
        }
        self.checks[batch_id] = 0
        return self.batches[batch_id]

    def listing(self, limit: int, after: str | None) -> dict:
        newest = sorted(self.batches.values(), key=lambda b: int(b["id"].split("_")[1]), reverse=True)
        if after is not None:
            newest = newest[[b["id"] for b in newest].index(after) + 1 :]
        return {"object": "list", "data": newest[:limit], "has_more": len(newest) > limit}

    def check(self, batch_id: str) -> dict:
        b = self.batches[batch_id]
        self.checks[batch_id] += 1
        if b["status"] in ("validating", "in_progress") and self.checks[batch_id] >= self.polls:
            self.finish(b)
        elif b["status"] == "validating":
            b["status"] = "in_progress"
        return b

    def finish(self, b: dict) -> None:
        lines = [json.loads(x) for x in self.files[b["input_file_id"]].splitlines() if x.strip()]
        if self.end == "failed":
            b.update(status="failed", errors={"data": [{"code": "invalid_request", "message": "bad file"}]})
            return
        answered = lines[: len(lines) // 2] if self.end in ("expired", "cancelled") else lines
        out, err = [], []
        for line in answered:
            cid, body = line["custom_id"], line["body"]
            assert line["method"] == "POST" and line["url"] == b["endpoint"]
            if cid in self.fail_ids:
                err.append({"id": f"req_{cid}", "custom_id": cid, "response": None,
                            "error": {"code": "server_error", "message": "the model crashed"}})  # fmt: skip
                continue
            if self.no_logprobs:
                body = {**body, "logprobs": False}
            answer = {"oops": "not a completion"} if cid in self.bad_body_ids else self.answer(body)
            out.append({"id": f"req_{cid}", "custom_id": cid, "error": None,
                        "response": {"status_code": 200, "request_id": f"r-{cid}", "body": answer}})  # fmt: skip
        for kind, rows in (("output", out), ("error", err)):
            if rows:
                file_id = f"file-{next(self.ids)}"
                self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                b[f"{kind}_file_id"] = file_id
        b["status"] = self.end
        b["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}

    @staticmethod
    def answer(body: dict) -> dict:
        text = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
        return FlakyServer.completion(text, body)

    @staticmethod
    def send(h: BaseHTTPRequestHandler, status: int, obj: dict) -> None:
        FlakyServer.send(h, status, json.dumps(obj).encode())

    @staticmethod
    def send_bytes(h: BaseHTTPRequestHandler, data: bytes) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def close(self) -> None:
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
