#!/usr/bin/env python3
"""A stand-in for the ``llama-server`` program, for the engine's process handling: it parses the
arguments dante passes, writes them to ``$FAKE_LLAMA_ARGS`` (JSON), answers ``GET /health`` and
``POST /v1/chat/completions`` as llama.cpp's server does with ``--reasoning-format none``
(reasoning_server.py, style llamacpp-none), and with ``$FAKE_LLAMA_FAIL`` exits at once with an
error on stderr, as the real program does on a model it cannot load. The real program runs in
the slow tests (tests/teacher/test_llamacpp_engine.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reasoning_server import response, send_json  # noqa: E402


def main() -> None:
    if sys.argv[1:] == ["--version"]:  # as llama-server writes it: to stderr, then its compiler
        print("version: 0.5.0-dev (build 1, commit 0c1e570)\nbuilt with GNU 12.2.0 for Linux x86_64", file=sys.stderr)
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args, rest = ap.parse_known_args()
    if os.environ.get("FAKE_LLAMA_ARGS"):
        Path(os.environ["FAKE_LLAMA_ARGS"]).write_text(json.dumps(sys.argv[1:]))
    if os.environ.get("FAKE_LLAMA_FAIL"):
        print(f"llama_model_load: error loading model: failed to open {args.model}", file=sys.stderr)
        sys.exit(1)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            send_json(self, 200, {"status": "ok"})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            send_json(self, *response("llamacpp-none", body["messages"][-1]["content"], body))

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
