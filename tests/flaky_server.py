"""An OpenAI-compatible endpoint on 127.0.0.1 that fails on purpose, for the openai teacher's
tests and the reliability suite. It serves /v1/chat/completions and /v1/completions, listens on
the loopback address only, answers at most ``max_requests`` requests and stops by itself after
``lifetime_s`` seconds, and counts every request server-side.

``script(prompt_text, attempt, body) -> action``, attempt counted from 1 per prompt text, body the
request's JSON:
    "ok"                  200 with a valid completion (top logprobs .5/.25 on 3 tokens that join to
                          the text; none at all while ``FlakyServer.ignore_logprobs`` is set, as
                          ``transformers serve`` does)
    ("429", seconds)      429 Too Many Requests with Retry-After
    "500" / "503"         server errors
    ("400", message)      400 Bad Request (a client error: never retried)
    ("hang", seconds)     sleeps past the client's timeout, then closes without answering
    "drop"                200 headers announcing 5000 bytes, part of the body, then the connection closes
    "reset"               closes the connection before any response
    "badjson"             200 with a body that is not JSON
    "badschema"           200 with JSON that is not a completion
A greedy request (temperature 0) is answered ``The answer to '<prompt>' is <len(prompt)>.``; a
sampled one with ``n`` choices answers ``#### <len(prompt) + i % 2>`` for choice i, so two samples
agree at rate 0.5.
With ``echo_auth`` every error body quotes the request's Authorization header after ``pad``
filler characters (a server that echoes the key back: the client must not repeat it).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKENS = 3
ENTROPY = 1.5 * math.log(2)  # every token: p = (.5, .25) + tail .25


def pieces(answer: str) -> list[str]:
    """The answer cut into TOKENS pieces that join to it: the tokens its logprobs list."""
    cut = [len(answer) * i // TOKENS for i in range(TOKENS + 1)]
    return [answer[cut[i] : cut[i + 1]] for i in range(TOKENS)]


class FlakyServer:
    def __init__(
        self, script, *, max_requests: int = 300, lifetime_s: float = 90.0, echo_auth: bool = False, pad: int = 0
    ) -> None:
        self.script, self.max_requests, self.echo_auth, self.pad = script, max_requests, echo_auth, pad
        self.attempts: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}
        self.served_ok: set[str] = set()
        self.faults: Counter[str] = Counter()
        self.auth: set[str] = set()
        self.paths: Counter[str] = Counter()  # request path -> count
        self.requests = 0
        self.overflow = False
        self.closed = False
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                with contextlib.suppress(
                    BrokenPipeError, ConnectionResetError
                ):  # the client gave up: expected for "hang"
                    server.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # loopback only, never another address
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.timer = threading.Timer(lifetime_s, self.close)  # bounded in time even if a test hangs
        self.timer.daemon = True
        self.timer.start()

    # --- one request ---------------------------------------------------------------------

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        body = json.loads(h.rfile.read(int(h.headers["Content-Length"])))
        text = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
        with self.lock:
            self.requests += 1
            self.paths[h.path] += 1
            if self.requests > self.max_requests:
                self.overflow = True
                action = "503"
            else:
                self.attempts[text] += 1
                self.times.setdefault(text, []).append(time.monotonic())
                self.auth.add(h.headers.get("Authorization", ""))
                action = self.script(text, self.attempts[text], body)
        kind = action[0] if isinstance(action, tuple) else action
        if kind != "ok":
            with self.lock:
                self.faults[kind] += 1
        # like servers that quote the request back: the Authorization header in the error body
        auth = "x" * self.pad + f" (you sent {h.headers.get('Authorization')})" if self.echo_auth else ""
        if kind == "ok":
            self.send(h, 200, json.dumps(self.completion(text, body)).encode())
            with self.lock:
                self.served_ok.add(text)
        elif kind == "429":
            self.send(h, 429, json.dumps({"error": f"rate limited{auth}"}).encode(), {"Retry-After": str(action[1])})
        elif kind == "400":
            self.send(h, 400, json.dumps({"error": f"{action[1]}{auth}"}).encode())
        elif kind in ("500", "503"):
            self.send(h, int(kind), json.dumps({"error": f"server error{auth}"}).encode())
        elif kind == "hang":
            time.sleep(action[1])
            h.close_connection = True
        elif kind == "drop":
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", "5000")
            h.end_headers()
            h.wfile.write(b'{"choices": [{"index": 0, "message": {"content": "The ans')
            h.wfile.flush()
            h.close_connection = True
        elif kind == "reset":
            h.close_connection = True
        elif kind == "badjson":
            self.send(h, 200, b'{"choices": [{"index": 0, "message": ')
        elif kind == "badschema":
            self.send(h, 200, json.dumps({"object": "error", "detail": f"not a completion{auth}"}).encode())
        else:
            raise ValueError(f"unknown action {action!r}")

    @staticmethod
    def send(h: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def echo(text: str, body: dict) -> dict:
        """``echo`` on the completions API: logprobs of every token of the prompt (cut before each
        space) and of one generated token, with their character offsets (None for the first)."""
        pieces_ = re.findall(r"\s*\S+|\s+$", text) + ["!"]
        offsets = [sum(len(x) for x in pieces_[:i]) for i in range(len(pieces_))]
        lps = [-0.1 * (i % 5 + 1) for i in range(len(pieces_))]
        tops = [{tok: lp, "#": lp - 1.0} for tok, lp in zip(pieces_, lps, strict=True)]
        logprobs = {"tokens": pieces_, "token_logprobs": [None, *lps[1:]], "top_logprobs": [None, *tops[1:]],
                    "text_offset": offsets}  # fmt: skip
        choice = {"index": 0, "text": text + "!", "finish_reason": "length", "logprobs": logprobs}
        return {
            "id": "cmpl",
            "object": "text_completion",
            "choices": [choice],
            "usage": {"prompt_tokens": len(pieces_) - 1},
        }

    @staticmethod
    def completion(text: str, body: dict) -> dict:
        n, chat, want_logprobs = body.get("n", 1), "messages" in body, bool(body.get("logprobs"))
        if body.get("echo") and not chat and want_logprobs and not getattr(FlakyServer, "ignore_logprobs", False):
            return FlakyServer.echo(text, body)
        if body.get("temperature", 0) == 0:
            answers = [f"The answer to {text!r} is {len(text)}."] * n
        else:
            answers = [f"#### {len(text) + i % 2}" for i in range(n)]
        a, b = math.log(0.5), math.log(0.25)
        want_logprobs = want_logprobs and not getattr(FlakyServer, "ignore_logprobs", False)

        def chat_logprobs(answer: str) -> dict:
            content = []
            for piece in pieces(answer):
                raw = list(piece.encode("utf-8"))
                top = [{"token": piece, "bytes": raw, "logprob": a}, {"token": "b", "bytes": [98], "logprob": b}]
                content.append({"token": piece, "bytes": raw, "logprob": a, "top_logprobs": top})
            return {"content": content}

        def completion_logprobs(answer: str) -> dict:
            tokens = pieces(answer)
            return {
                "tokens": tokens,
                "token_logprobs": [a] * TOKENS,
                "top_logprobs": [{t: a, "b": b} if t != "b" else {t: a, "c": b} for t in tokens],
            }

        if chat:
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": answer},
                    "finish_reason": "stop",
                    "logprobs": chat_logprobs(answer) if want_logprobs else None,
                }
                for i, answer in enumerate(answers)
            ]
        else:
            choices = [
                {
                    "index": i,
                    "text": answer,
                    "finish_reason": "length",
                    "logprobs": completion_logprobs(answer) if want_logprobs else None,
                }
                for i, answer in enumerate(answers)
            ]
        return {
            "id": "cmpl",
            "object": "chat.completion" if chat else "text_completion",
            "choices": choices,
            "usage": {"prompt_tokens": 11, "completion_tokens": TOKENS * n},
        }

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
