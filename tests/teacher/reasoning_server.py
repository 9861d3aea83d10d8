"""A stand-in for thinking teachers behind an OpenAI-compatible chat API, on 127.0.0.1 only,
answering as each server does (field names, what the logprobs cover), for the reasoning tests:

    vllm       vLLM with a reasoning parser: thinking in ``reasoning_content``, the answer in
               ``content``, logprobs over every output token (the thinking, ``</think>``, the
               blank line, the answer)
    vllm-new   newer vLLM: the same in a field named ``reasoning``
    sglang     SGLang's parsers: ``reasoning_content``, logprobs over both (SGLang issue 25055)
    deepseek   the DeepSeek API: ``reasoning_content``, no logprobs, the thinking's token count in
               ``usage.completion_tokens_details.reasoning_tokens``
    inline     no parser: ``<think>…</think>`` inside ``content``
    cut        the length limit inside the thinking: reasoning, ``content`` null, finish_reason length
    empty      the thinking ended and nothing followed it (``content`` "")
    plain      a teacher that does not think

It answers at most ``max_requests`` requests and stops by itself after ``lifetime_s`` seconds; it
keeps every request body (``bodies``) so a test can see what was asked (``chat_template_kwargs``).
"""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LP = math.log(0.5)


def thinking(prompt: str) -> str:
    return f"The user asks {prompt!r}.\nIts length is {len(prompt)}."


def answer(prompt: str) -> str:
    return f"The answer is {len(prompt)}."


def tokens(text: str) -> list[str]:
    """Words with their leading space, newlines apart: a tokenization that joins back to the text."""
    out: list[str] = []
    for part in text.split("\n"):
        if out:
            out.append("\n")
        words = part.split(" ")
        out += [w if i == 0 else " " + w for i, w in enumerate(words) if w or i == 0]
    return [t for t in out if t]


def logprobs(pieces: list[str]) -> dict:
    content = []
    for p in pieces:
        raw = list(p.encode("utf-8"))
        top = [{"token": p, "bytes": raw, "logprob": LP}, {"token": "x", "bytes": [120], "logprob": LP - 1}]
        content.append({"token": p, "bytes": raw, "logprob": LP, "top_logprobs": top})
    return {"content": content}


def response(style: str, prompt: str, want_logprobs: bool) -> dict:
    think, ans = thinking(prompt), answer(prompt)
    message: dict = {"role": "assistant", "content": ans}
    finish = "stop"
    out_tokens = tokens(think) + ["</think>", "\n\n"] + tokens(ans)
    if style in ("vllm", "sglang", "deepseek", "cut", "empty"):
        message["reasoning_content"] = think
    if style == "vllm-new":
        message["reasoning"] = think
    if style == "inline":
        message["content"] = f"<think>\n{think}\n</think>\n\n{ans}"
        out_tokens = ["<think>", "\n"] + tokens(think) + ["\n", "</think>", "\n\n"] + tokens(ans)
    if style == "cut":
        message["content"], finish = None, "length"
        out_tokens = tokens(think)
    if style == "empty":
        message["content"] = ""
        out_tokens = tokens(think) + ["</think>"]
    if style == "plain":
        out_tokens = tokens(ans)
    usage = {"prompt_tokens": 9, "completion_tokens": len(out_tokens)}
    if style == "deepseek":
        usage["completion_tokens_details"] = {"reasoning_tokens": len(tokens(think)) + 1}
    lp = logprobs(out_tokens) if want_logprobs and style != "deepseek" else None
    return {
        "id": "chatcmpl",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": lp}],
        "usage": usage,
    }


class ReasoningServer:
    def __init__(self, style: str, *, max_requests: int = 100, lifetime_s: float = 60.0) -> None:
        self.style, self.max_requests = style, max_requests
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.bodies.append(body)
                    over = len(server.bodies) > server.max_requests
                prompt = body["messages"][-1]["content"]
                data = (
                    b"{}" if over else json.dumps(response(server.style, prompt, bool(body.get("logprobs")))).encode()
                )
                self.send_response(503 if over else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.timer = threading.Timer(lifetime_s, self.close)
        self.timer.daemon = True
        self.timer.start()

    def close(self) -> None:
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
