"""Stand-ins for thinking teachers behind an OpenAI-compatible chat API, on 127.0.0.1 only, that
answer byte for byte as each real server does. Each one holds the model's output as token strings
(a Qwen3-style model that writes ``<think>\\n…\\n</think>\\n\\n…`` and ends with ``<|im_end|>``, or a
DeepSeek-R1-Distill one whose template opened the block in the prompt, so it writes no ``<think>``),
cuts it at the request's ``max_tokens`` (finish_reason length) and then applies the server's own
code path, read from its source:

    vllm-qwen3        vLLM, ``--reasoning-parser qwen3`` (vllm/reasoning/qwen3_reasoning_parser.py):
                      ``<think>`` removed, the text before ``</think>`` is the reasoning and everything
                      after it the content, untrimmed (so it starts with "\\n\\n"); no ``</think>``:
                      all reasoning, content null. Logprobs: every output token, each decoded alone
                      with the tokenizer's default (``convert_ids_list_to_tokens``), so the end of
                      sequence is the text "<|im_end|>"; ``bytes`` its UTF-8.
    vllm-deepseek_r1  vLLM, ``--reasoning-parser deepseek_r1`` on R1-Distill (prompt-opened thinking).
    sglang            SGLang's ``qwen3`` detector (python/sglang/srt/parser/reasoning_parser.py):
                      reasoning only when ``<think>`` is in the output; split at ``</think>``,
                      untrimmed; ``content`` / ``reasoning_content`` null when empty; logprobs as vLLM.
    llamacpp          llama.cpp's server, ``--reasoning-format deepseek`` (common/chat-parser.cpp,
                      ``try_parse_reasoning``): the reasoning trimmed, the spaces after ``</think>``
                      consumed, ``content`` always a string; logprobs entries with ``id``, ``token``,
                      ``bytes``, ``logprob``, ``top_logprobs``; the end of generation is the last
                      entry, its ``token`` "" and ``bytes`` [] (llama.cpp 0c1e570, as vendored by
                      llama-cpp-python 0.3.36, read off the real server: BENCHMARKS 17).
    llamacpp-none     llama.cpp's server, ``--reasoning-format none`` (as ``teacher.backend: llamacpp``
                      starts it): the whole text in ``content``, markers included; logprobs as above.
    deepseek          the DeepSeek API (deepseek-reasoner): ``logprobs`` / ``top_logprobs`` refused
                      with HTTP 400 and its error body; without them ``reasoning_content`` and
                      ``content``, and the thinking's token count in
                      ``usage.completion_tokens_details.reasoning_tokens``.
    inline            vLLM with no reasoning parser: the whole output in ``content``.
    plain             a model that does not think.
    o-series          an OpenAI reasoning model: ``max_tokens``, ``temperature`` and ``logprobs``
                      refused with HTTP 400 and OpenAI's error body (``param`` names the field).

``field`` picks the reasoning field's name where a server has two (vLLM: ``reasoning_content``
before 0.10, ``reasoning`` since). It answers at most ``max_requests`` requests and stops by itself
after ``lifetime_s`` seconds; it keeps every request body (``bodies``).
"""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LP = math.log(0.5)
QWEN_EOS, R1_EOS = "<|im_end|>", "<｜end▁of▁sentence｜>"


def thinking(prompt: str) -> str:
    return f"The user asks {prompt!r}.\nIts length is {len(prompt)}."


def answer(prompt: str) -> str:
    return f"The answer is {len(prompt)}."


def tokens(text: str) -> list[str]:
    """Words with their leading space, each newline its own token: a tokenization that joins back
    to the text."""
    out: list[str] = []
    for i, part in enumerate(text.split("\n")):
        if i:
            out.append("\n")
        words = part.split(" ")
        out += [w if j == 0 else " " + w for j, w in enumerate(words) if w or j == 0]
    return [t for t in out if t]


def model_output(style: str, prompt: str, no_answer: bool = False) -> tuple[list[str], str | None]:
    """The tokens the model writes for ``prompt`` under ``style`` and its end-of-sequence token
    (``no_answer``: it ends right after ``</think>``)."""
    if style == "plain":
        return tokens(answer(prompt)), QWEN_EOS
    body = tokens(thinking(prompt)) + ["\n", "</think>"] + ([] if no_answer else ["\n\n", *tokens(answer(prompt))])
    if style == "vllm-deepseek_r1":  # R1-Distill: "<｜Assistant｜><think>\n" ends the prompt
        return body, R1_EOS
    return ["<think>", "\n", *body], QWEN_EOS


def _vllm_parse(text: str) -> tuple[str | None, str | None]:
    head, found, rest = text.partition("<think>")
    text = rest if found else head
    if "</think>" in text:
        reasoning, _, content = text.partition("</think>")
        return reasoning, content or None
    return text, None  # thinking enabled and no end: truncated, all reasoning


def _sglang_parse(text: str) -> tuple[str | None, str | None]:
    if "<think>" not in text:
        return None, text
    while text.startswith("<think>"):
        text = text[len("<think>") :]
    if "</think>" not in text:
        return text, ""
    reasoning, content = text.split("</think>", 1)
    return reasoning, content


def _llamacpp_parse(text: str) -> tuple[str | None, str]:
    ws = " \t\n\r"
    if not text.startswith("<think>"):
        return None, text
    reasoning, found, rest = text[len("<think>") :].partition("</think>")
    if not found:
        return reasoning.strip(ws) or None, ""
    return reasoning.strip(ws) or None, rest.lstrip(ws)


def _entry(token: str, with_id: bool) -> dict:
    raw = list(token.encode("utf-8"))
    top = [{"token": token, "bytes": raw, "logprob": LP}, {"token": "x", "bytes": [120], "logprob": LP - 1}]
    if with_id:
        top = [{"id": 7, **top[0]}, {"id": 8, **top[1]}]
    entry = {"token": token, "bytes": raw, "logprob": LP, "top_logprobs": top}
    return {"id": 7, **entry} if with_id else entry


def response(
    style: str, prompt: str, body: dict, field: str = "reasoning_content", no_answer: bool = False
) -> tuple[int, dict]:
    """(HTTP status, JSON body) of the server's answer to one chat request."""
    want_logprobs = bool(body.get("logprobs"))
    if style == "deepseek" and want_logprobs:
        return 400, {
            "error": {
                "message": "deepseek-reasoner does not support the parameter `logprobs`",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_request_error",
            }
        }
    if style == "o-series":
        bad = next((k for k in ("max_tokens", "logprobs") if k in body), None)
        if bad is not None:
            hint = " Use 'max_completion_tokens' instead." if bad == "max_tokens" else ""
            return 400, {
                "error": {
                    "message": f"Unsupported parameter: '{bad}' is not supported with this model.{hint}",
                    "type": "invalid_request_error",
                    "param": bad,
                    "code": "unsupported_parameter",
                }
            }
        if body.get("temperature", 1) != 1:
            return 400, {
                "error": {
                    "message": f"Unsupported value: 'temperature' does not support {body['temperature']} with this "
                    "model. Only the default (1) value is supported.",
                    "type": "invalid_request_error",
                    "param": "temperature",
                    "code": "unsupported_value",
                }
            }
    out, eos = model_output(style, prompt, no_answer)
    cap = body.get("max_tokens") or body.get("max_completion_tokens") or 10**6
    finish = "stop"
    if len(out) >= cap:
        out, finish = out[:cap], "length"
    elif eos is not None:
        out = [*out, eos]
    text = "".join(t for t in out if t != eos)  # the text skips special tokens
    message: dict = {"role": "assistant"}
    sent = out
    if style in ("vllm-qwen3", "vllm-deepseek_r1"):
        reasoning, content = _vllm_parse(text)
        message.update({field: reasoning, "content": content})
    elif style == "sglang":
        reasoning, content = _sglang_parse(text)
        message.update({"content": content or None, "reasoning_content": reasoning or None})
    elif style == "llamacpp":
        reasoning, content = _llamacpp_parse(text)
        message["content"] = content
        if reasoning:
            message["reasoning_content"] = reasoning
        sent = ["" if t == eos else t for t in out]  # the end of generation: no text, no bytes
    elif style == "llamacpp-none":
        message["content"] = text
        sent = ["" if t == eos else t for t in out]
    elif style in ("deepseek", "o-series"):
        reasoning, content = _vllm_parse(text)
        message.update({"content": (content or "").lstrip(), "reasoning_content": (reasoning or "").strip()})
    else:  # inline, plain
        message["content"] = text
    usage: dict = {"prompt_tokens": 9, "completion_tokens": len(out)}
    if style in ("deepseek", "o-series"):
        spent = out.index("</think>") + 1 if "</think>" in out else len(out)
        usage["completion_tokens_details"] = {"reasoning_tokens": spent}
    lp = {"content": [_entry(t, style.startswith("llamacpp")) for t in sent]} if want_logprobs else None
    choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": lp}
    return 200, {"id": "chatcmpl", "object": "chat.completion", "choices": [choice], "usage": usage}


def send_json(handler: BaseHTTPRequestHandler, status: int, data: dict) -> None:
    """Answer ``handler``'s request with ``data`` as JSON (UTF-8, not ASCII-escaped, as servers send it)."""
    raw = json.dumps(data, ensure_ascii=False).encode("utf-8")
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)


class ReasoningServer:
    def __init__(
        self,
        style: str,
        *,
        field: str = "reasoning_content",
        no_answer: bool = False,
        max_requests: int = 100,
        lifetime_s: float = 60.0,
    ) -> None:
        self.style, self.field, self.no_answer, self.max_requests = style, field, no_answer, max_requests
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
                status, data = (
                    (503, {}) if over else response(server.style, prompt, body, server.field, server.no_answer)
                )
                send_json(self, status, data)

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
