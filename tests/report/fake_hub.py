"""A stand-in for the Hugging Face Hub on 127.0.0.1: only the endpoints huggingface_hub's upload
path uses without Xet (create repo, validate a card's YAML, preupload, commit), answering every file as a regular
(inline) upload, and recording what it was sent: repos, files and their bytes, auth headers."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, str] = {}  # repo id -> type
        self.files: dict[tuple[str, str], bytes] = {}  # (repo id, path) -> content
        self.auth: set[str] = set()
        self.paths: list[str] = []
        self.validated: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hub.auth.add(self.headers.get("Authorization") or "")
                hub.paths.append(self.path)
                parts = self.path.strip("/").split("/")
                if self.path.startswith("/api/repos/create"):
                    req = json.loads(body)
                    repo = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
                    hub.repos[repo] = req.get("type") or "model"
                    return self._reply(200, {"url": f"{hub.url}/{repo}", "name": repo})
                if self.path.startswith("/api/validate-yaml"):  # the card's metadata, checked before a README commit
                    hub.validated.append(json.loads(body).get("repoType"))
                    return self._reply(200, {"errors": [], "warnings": []})
                if len(parts) >= 6 and parts[0] == "api" and parts[4] == "preupload":
                    req = json.loads(body)
                    files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in req["files"]]
                    return self._reply(200, {"files": files})
                if len(parts) >= 6 and parts[0] == "api" and parts[4] == "commit":
                    repo = f"{parts[2]}/{parts[3]}"
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            v = item["value"]
                            hub.files[(repo, v["path"])] = base64.b64decode(v["content"])
                    return self._reply(200, {"commitUrl": f"{hub.url}/{repo}/commit/{'a' * 40}", "commitOid": "a" * 40})
                return self._reply(404, {"error": f"not served: {self.path}"})

            def do_GET(self) -> None:  # noqa: N802
                hub.paths.append(self.path)
                return self._reply(404, {"error": f"not served: {self.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
