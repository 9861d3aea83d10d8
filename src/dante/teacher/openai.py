"""OpenAI-compatible HTTP teacher (vLLM serve, SGLang, TGI, llama.cpp, hosted APIs) over httpx.

Bounded concurrency, per-request timeout, retries with exponential back-off + jitter on
429 (Retry-After honoured) / 5xx / timeouts / dropped connections / malformed bodies. The API
key is sent in a header and nowhere else: never logged, saved or put in an error message.
"""

from __future__ import annotations

import ast
import email.utils
import json
import logging
import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any

import httpx

from dante.config import TeacherConfig, redact_url
from dante.errors import DanteError
from dante.prompts import Prompt, render_prompt
from dante.teacher import reasoning
from dante.teacher.base import Completion, Generation, Sampling, Teacher
from dante.teacher.entropy import topk_entropy
from dante.tokens import TokenLogprobs

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 409, 425, 429}  # plus every 5xx


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(
    retry: int, base: float, cap: float, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """Delay before retry number ``retry`` (0-based): min(cap, base * 2**retry) * U(0.5, 1)
    ("equal jitter", so concurrent clients spread out); a server's Retry-After wins when it
    asks for longer, up to ``cap``."""
    u = (rng or random).random()
    delay = min(cap, base * 2**retry) * (0.5 + 0.5 * u)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


class _Rejected(Exception):
    """A non-retryable HTTP answer (4xx other than 408/409/425/429)."""

    def __init__(self, status: int, body: str) -> None:
        self.status, self.body = status, body
        super().__init__(f"HTTP {status}: {body}")


def _top_values(entries: Any, k: int) -> list[float]:
    """k highest logprobs from a chat ``top_logprobs`` list or a completions {token: logprob} dict."""
    if isinstance(entries, dict):
        values = [float(v) for v in entries.values()]
    else:
        values = [float(e["logprob"]) for e in entries or []]
    return sorted(values, reverse=True)[:k]


def token_bytes(token: str, raw: list[int] | None = None) -> bytes:
    """A token's bytes from an OpenAI-style entry: its ``bytes`` list when the server sends one,
    vLLM's ``bytes:\\xNN`` spelling of a partial UTF-8 token, else the token's UTF-8."""
    if raw is not None:
        return bytes(raw)
    if token.startswith("bytes:"):
        try:
            return ast.literal_eval("b'" + token[6:].replace("'", "\\'") + "'")
        except (ValueError, SyntaxError):
            pass
    return token.encode("utf-8")


def _payload_chat(content: list[dict[str, Any]], store: int) -> TokenLogprobs:
    return TokenLogprobs(
        tokens=[token_bytes(t["token"], t.get("bytes")) for t in content],
        logprobs=[float(t["logprob"]) for t in content],
        top=[
            sorted(
                ((token_bytes(a["token"], a.get("bytes")), float(a["logprob"])) for a in t.get("top_logprobs") or []),
                key=lambda x: -x[1],
            )[:store]
            for t in content
        ],
    )


def _payload_completions(lp: dict[str, Any], store: int) -> TokenLogprobs:
    tops = lp.get("top_logprobs") or [None] * len(lp["tokens"])
    return TokenLogprobs(
        tokens=[token_bytes(t) for t in lp["tokens"]],
        logprobs=[float(x) if x is not None else 0.0 for x in lp.get("token_logprobs") or [0.0] * len(lp["tokens"])],
        top=[
            sorted(((token_bytes(a), float(v)) for a, v in (t or {}).items()), key=lambda x: -x[1])[:store]
            for t in tops
        ],
    )


def parse_choice(
    choice: dict[str, Any], api: str, k: int, store: int = 0, thinking: str = "auto", opened: bool = False
) -> Generation:
    """One ``choices[i]`` of a chat or completions response -> Generation (KeyError/TypeError if
    malformed); ``store`` K > 0 also keeps the per-token payload when the server sent logprobs.

    A thinking teacher's reasoning is kept apart by ``dante.teacher.reasoning``'s rule: from the
    message's reasoning field, else from inline markers (``opened``: the prompt sent opened the
    thinking block). With ``thinking`` off it is kept apart all the same, and counted by the cache.
    Its logprobs cover the thinking too: the entropies and the payload keep every token,
    ``reasoning_tokens`` says how many come first. An end-of-sequence token that a server spells
    as text ("<|im_end|>", which vLLM and SGLang put last in the logprobs) is kept with no bytes,
    as every engine keeps special tokens, so the payload spells the stored text."""
    entropies = None
    tokens = None
    payload = None
    pieces: list[bytes] | None = None
    lp = choice.get("logprobs")
    if api == "chat":
        message = choice["message"]
        text = message["content"] or ""
        if not isinstance(text, str):
            raise TypeError("completion text is not a string")
        split = reasoning.from_message(message, text)
        content = lp.get("content") if isinstance(lp, dict) else None
        if content is not None:
            tokens = len(content)
            pieces = [token_bytes(t["token"], t.get("bytes")) for t in content]
            if k > 0:
                entropies = [
                    topk_entropy(_top_values(t.get("top_logprobs"), k) or [float(t["logprob"])]) for t in content
                ]
            if store > 0:
                payload = _payload_chat(content, store)
    else:
        text = choice["text"]
        if not isinstance(text, str):
            raise TypeError("completion text is not a string")
        split = reasoning.split_inline(text, opened=opened and thinking != "off")
        if isinstance(lp, dict) and lp.get("tokens") is not None:
            tokens = len(lp["tokens"])
            pieces = [token_bytes(t) for t in lp["tokens"]]
            if k > 0 and lp.get("top_logprobs") is not None:
                tops, own = lp["top_logprobs"], lp.get("token_logprobs") or [None] * tokens
                entropies = [
                    topk_entropy(_top_values(t, k) or ([float(o)] if o is not None else []))
                    for t, o in zip(tops, own, strict=False)
                ]
            if store > 0:
                payload = _payload_completions(lp, store)
    finish = choice.get("finish_reason")
    first_answer, dropped = None, False
    if pieces is not None:
        found = reasoning.locate_answer(pieces, split, finish)
        if found is not None:
            first_answer = found[1] if split.reasoning is not None else None
            if payload is not None and found[0][-1:] != pieces[-1:]:
                payload = _end_token_without_bytes(payload, pieces[-1])
        elif split.reasoning is not None:  # the tokens do not spell the stored text: no payload rather than a wrong one
            dropped, payload = payload is not None, None
    return Generation(
        text=split.answer,
        completion_tokens=tokens,
        finish_reason=finish,
        token_entropies=entropies,
        token_logprobs=payload,
        reasoning=split.reasoning,
        reasoning_tokens=first_answer,
        reasoning_source=split.source,
        reasoning_closed=split.closed,
        payload_dropped=dropped,
    )


def _end_token_without_bytes(payload: TokenLogprobs, spelled: bytes) -> TokenLogprobs:
    """The payload with its last token, the end of sequence spelled ``spelled``, and that same
    alternative at every position, kept with no bytes (``dante.cache.payload``: a special token is
    the empty string)."""
    top = [[(b"" if tok == spelled else tok, lp) for tok, lp in row] for row in payload.top]
    return TokenLogprobs([*payload.tokens[:-1], b""], list(payload.logprobs), top)


def parse_echo(data: Any, start: int, text: str, k: int) -> TokenLogprobs | None:
    """The completion's part of an echoed completions response: the tokens whose ``text_offset``
    lies in [start, start + len(text)), with their logprobs and top-k. None when a token straddles
    the prompt and the completion (the teacher's tokenizer merges across them). A response with
    no logprobs is a ValueError (retried, then reported: a score is never silently missing)."""
    try:
        lp = data["choices"][0]["logprobs"]
        tokens, lps, offsets = lp["tokens"], lp["token_logprobs"], lp["text_offset"]
        tops = lp.get("top_logprobs") or [None] * len(tokens)
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"no echoed logprobs in the response ({type(exc).__name__}: {exc})") from None
    end = start + len(text)
    picked: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": []}
    for tok, off, lp_t, top in zip(tokens, offsets, lps, tops, strict=False):
        if off < start < off + len(tok):
            return None
        if start <= off < end:
            if lp_t is None:
                raise ValueError("no logprob for a token of the completion")
            for key, value in zip(picked, (tok, lp_t, top), strict=True):
                picked[key].append(value)
    out = _payload_completions(picked, k)  # the completions API's logprobs, read as the cache's payload is
    return out if b"".join(out.tokens) == text.encode("utf-8") else None


def parse_response(
    data: Any, api: str, k: int, n: int, store: int = 0, thinking: str = "auto", opened: bool = False
) -> list[Generation]:
    """A whole response body -> its Generations (ordered by ``index``); ValueError if malformed."""
    try:
        choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
        gens = [parse_choice(c, api, k, store, thinking, opened) for c in choices]
        usage = data.get("usage") or {}
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"malformed response ({type(exc).__name__}: {exc})") from None
    if not gens:
        raise ValueError("malformed response (no choices)")
    for g in gens:
        g.prompt_tokens = usage.get("prompt_tokens")
        if g.completion_tokens is None and len(gens) == 1 and n == 1:
            g.completion_tokens = usage.get("completion_tokens")
            details = usage.get("completion_tokens_details") or {}
            if g.reasoning is not None and g.reasoning_tokens is None:  # no logprobs: the API's own count
                g.reasoning_tokens = details.get("reasoning_tokens")
    return gens


def render_request(cfg: TeacherConfig, prompt: Prompt) -> str | list[dict[str, Any]]:
    """What a request carries of the prompt: chat messages (the server applies its template), or
    for the completions API the raw text."""
    return prompt.chat() if cfg.openai.api == "chat" else render_prompt(prompt, None, use_chat_template=False)


def request_body(cfg: TeacherConfig, prompt: Prompt, sampling: Sampling) -> dict[str, Any]:
    """The JSON body of one chat or completions request for ``prompt``: the same for a request
    sent now and for a line of an OpenAI batch file (``dante.teacher.batch``)."""
    length_field = cfg.openai.max_tokens_field if cfg.openai.api == "chat" else "max_tokens"
    body: dict[str, Any] = {
        "model": cfg.model,
        length_field: sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "n": sampling.n,
    }
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    k = sampling.logprobs  # enough for the entropy's top-k and the stored payload's top-K
    if cfg.openai.api == "chat":
        body["messages"] = render_request(cfg, prompt)
        if k > 0:
            body.update(logprobs=True, top_logprobs=k)
        if cfg.thinking != "auto":  # vLLM's and SGLang's switch into the model's chat template
            body["chat_template_kwargs"] = {"enable_thinking": cfg.thinking == "on"}
    else:
        body["prompt"] = render_request(cfg, prompt)
        if k > 0:
            body["logprobs"] = k
    if cfg.reasoning_effort is not None:
        body["reasoning_effort"] = cfg.reasoning_effort
    return body


# A request field a server refuses -> the setting that sent it, and what to set instead (OpenAI's
# reasoning models and the DeepSeek API refuse some of the ordinary sampling fields).
REFUSED_FIELDS = {
    "max_tokens": ("teacher.openai.max_tokens_field", "set teacher.openai.max_tokens_field=max_completion_tokens"),
    "logprobs": (
        "teacher.top_logprobs",
        "this endpoint returns no logprobs: set teacher.top_logprobs=0 and teacher.store_logprobs=0 (records get "
        "output_entropy null; token-level KD needs a server that returns them)",
    ),
    "top_logprobs": ("teacher.top_logprobs", "set teacher.top_logprobs=0 and teacher.store_logprobs=0"),
    "temperature": ("teacher.temperature", "set teacher.temperature=1 (the only value such models accept)"),
    "top_p": ("teacher.top_p", "set teacher.top_p=1"),
    "reasoning_effort": ("teacher.reasoning_effort", "leave teacher.reasoning_effort unset for this model"),
    "chat_template_kwargs": ("teacher.thinking", "set teacher.thinking=auto (this server takes no template switch)"),
}


def refused_setting(body: str) -> tuple[str, str]:
    """(dante setting, fix) for a 4xx body that names a refused request field (OpenAI's ``param``,
    or the field's name quoted in the message); the generic advice otherwise."""
    param = None
    try:
        error = json.loads(body).get("error") or {}
        param = error.get("param") if isinstance(error, dict) else None
        message = str(error.get("message") or "") if isinstance(error, dict) else ""
    except (ValueError, AttributeError):
        message = body
    if param not in REFUSED_FIELDS:
        param = next((k for k in REFUSED_FIELDS if f"'{k}'" in message or f"`{k}`" in message), None)
    if param in REFUSED_FIELDS:
        return REFUSED_FIELDS[param]
    return "teacher", "check teacher.model, teacher.openai.api and the sampling settings"


class OpenAITeacher(Teacher):
    """Chat or completions endpoint of any OpenAI-compatible server."""

    def __init__(self, cfg: TeacherConfig) -> None:
        super().__init__(cfg)
        if not cfg.model:
            raise DanteError("the openai backend needs the served model name", field="teacher.model")
        base_url = cfg.openai.base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise DanteError(
                "no server URL",
                field="teacher.openai.base_url",
                hint="set teacher.openai.base_url (e.g. http://127.0.0.1:8000/v1) or OPENAI_BASE_URL",
            )
        key = (
            cfg.openai.api_key.get_secret_value()
            if cfg.openai.api_key is not None
            else os.environ.get(cfg.openai.api_key_env)
        )
        self._secret = key or None
        self.name = cfg.model
        self.base_url = base_url.rstrip("/")
        self.path = "/chat/completions" if cfg.openai.api == "chat" else "/completions"
        self.endpoint = (redact_url(self.base_url) or "") + self.path  # what errors show: no URL credentials
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(cfg.openai.request_timeout_s),
            limits=httpx.Limits(
                max_connections=cfg.openai.concurrency, max_keepalive_connections=cfg.openai.concurrency
            ),
        )
        self._n_supported = True
        self._stop = threading.Event()
        self._rng = random.Random()

    # --- requests -------------------------------------------------------------------------

    def render(self, prompt: Prompt) -> str | list[dict[str, Any]]:
        """Chat: the messages (the server applies its template). Completions: raw text."""
        return render_request(self.cfg, prompt)

    def _payload(self, prompt: Prompt, sampling: Sampling) -> dict[str, Any]:
        return request_body(self.cfg, prompt, sampling)

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _post(self, body: dict[str, Any], sampling: Sampling | None, what: str, parse=None) -> Any:
        """POST with retries; returns the parsed Generations (or ``parse`` of the body) or raises
        DanteError/_Rejected."""
        cfg = self.cfg
        attempts = cfg.openai.max_retries + 1
        last = "no attempt made"
        for attempt in range(attempts):
            if self._stop.is_set():
                raise DanteError("stopped", field="teacher")
            retry_after = None
            try:
                resp = self._client.post(self.path, json=body)
                if resp.status_code == 200:
                    if parse is not None:
                        return parse(resp.json())
                    return parse_response(
                        resp.json(),
                        cfg.openai.api,
                        sampling.top_logprobs,
                        body["n"],
                        sampling.store_logprobs,
                        cfg.thinking,
                        reasoning.prompt_opens_thinking(body.get("prompt")),
                    )
                excerpt = self._scrub(resp.text)[:300].strip()  # scrub first: a cut could split the key
                if resp.status_code in RETRY_STATUS or resp.status_code >= 500:
                    last = f"HTTP {resp.status_code}: {excerpt}"
                    retry_after = parse_retry_after(resp.headers.get("retry-after"))
                else:
                    raise _Rejected(resp.status_code, excerpt)
            except httpx.TimeoutException:
                last = f"timed out after {cfg.openai.request_timeout_s:g}s"
            except httpx.TransportError as exc:  # refused, reset, dropped mid-body
                last = f"connection failed ({type(exc).__name__})"
            except ValueError as exc:  # JSON decode errors and malformed bodies
                last = f"malformed response: {self._scrub(str(exc))[:200]}"
            if attempt + 1 < attempts:
                delay = backoff_delay(
                    attempt, cfg.openai.backoff_base_s, cfg.openai.backoff_max_s, retry_after, self._rng
                )
                log.warning("%s: %s; retry %d/%d in %.2fs", what, last, attempt + 1, cfg.openai.max_retries, delay)
                if self._stop.wait(delay):
                    raise DanteError("stopped", field="teacher")
        raise DanteError(
            f"{what} failed after {attempts} attempts; last error: {last}",
            file=self.endpoint,
            field="teacher",
            hint=(
                "check the server, or raise teacher.openai.max_retries / request_timeout_s; finished records are "
                "kept, re-run to resume"
            ),
        )

    def _generate_one(self, prompt: Prompt, sampling: Sampling) -> list[Generation]:
        what, n = f"prompt {prompt.id}", sampling.n
        gens: list[Generation] = []
        if n > 1 and self._n_supported:
            try:
                gens = self._post(self._payload(prompt, sampling), sampling, what)
            except _Rejected as exc:
                if exc.status not in (400, 422):
                    raise self._rejected(exc, what) from None
                log.warning("server rejected n=%d (HTTP %d); sending %d separate requests", n, exc.status, n)
                self._n_supported = False
        while len(gens) < n:  # n unsupported, or fewer choices than asked: one request per sample
            seed = None if sampling.seed is None else sampling.seed + len(gens)
            one = replace(sampling, n=1, seed=seed)
            try:
                gens += self._post(self._payload(prompt, one), one, what)[:1]
            except _Rejected as exc:
                raise self._rejected(exc, what) from None
        return gens[:n]

    def _rejected(self, exc: _Rejected, what: str) -> DanteError:
        field, hint = refused_setting(exc.body)
        if exc.status in (401, 403):
            field, hint = "teacher.openai.api_key_env", "check teacher.openai.api_key_env"
        return DanteError(
            f"{what}: server refused the request (HTTP {exc.status}): {exc.body}",
            file=self.endpoint,
            field=field,
            hint=hint,
        )

    # --- the Teacher interface -----------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[Generation]]:
        if len(prompts) == 1:  # iter_completions' path: one prompt per worker thread already
            return [self._generate_one(prompts[0], sampling)]
        with ThreadPoolExecutor(max_workers=self.cfg.openai.concurrency) as pool:
            return list(pool.map(lambda p: self._generate_one(p, sampling), prompts))

    def score(
        self, prompts: Sequence[Prompt], completions: Sequence[str], k: int = 0, ended: Sequence[bool] | None = None
    ) -> list[TokenLogprobs | None]:
        """``/v1/completions`` with ``echo``, ``logprobs`` and one generated token: the server
        returns the logprob (and top-k) of every token of prompt + completion; the completion's
        are those at or after the prompt's length (``text_offset``). Needs
        ``teacher.openai.api: completions``: a chat endpoint returns no logprobs for its input.
        The end of turn (``ended``) is not scored: this engine sends text and holds no tokenizer
        to name the end-of-turn token with."""
        if ended is not None and any(ended):
            raise DanteError(
                "the openai engine cannot score the teacher's end of turn after a sample (it sends text, and has "
                "no tokenizer to name the end-of-turn token)",
                field="train.loss.policy_gradient.score_end",
                hint="set train.loss.policy_gradient.score_end=false, or teacher.backend hf or vllm",
            )
        if self.cfg.openai.api != "completions":
            raise DanteError(
                "scoring a given text needs the completions endpoint (echo + logprobs); the chat endpoint returns "
                "logprobs only for what it generates",
                field="teacher.openai.api",
                hint="set teacher.openai.api=completions (the prompt is sent as text: render it as the teacher was "
                "trained, e.g. with prompts.template), or use teacher.backend hf or vllm",
            )
        with ThreadPoolExecutor(max_workers=self.cfg.openai.concurrency) as pool:
            return list(pool.map(lambda pc: self._score_one(*pc, k), zip(prompts, completions, strict=True)))

    def _score_one(self, prompt: Prompt, text: str, k: int) -> TokenLogprobs | None:
        head = render_request(self.cfg, prompt)
        body = {"model": self.cfg.model, "prompt": head + text, "max_tokens": 1, "temperature": 0.0, "echo": True,
                "logprobs": max(k, 1)}  # fmt: skip
        what = f"scoring a sample of prompt {prompt.id}"
        try:
            return self._post(body, None, what, parse=lambda data: parse_echo(data, len(head), text, k))
        except _Rejected as exc:
            raise self._rejected(exc, what) from None

    def _complete_one(self, prompt: Prompt) -> Completion:
        return self.complete([prompt])[0]

    def iter_completions(self, prompts: Sequence[Prompt]) -> Iterator[Completion]:
        """Stream completions as they finish, ``concurrency`` prompts in flight. On a fatal
        error, nothing new starts; requests already running finish and are yielded, then the
        error is raised, so the writer keeps every finished record."""
        pending = iter(prompts)
        error: BaseException | None = None
        in_flight: set[Future[Completion]] = set()
        pool = ThreadPoolExecutor(max_workers=self.cfg.openai.concurrency, thread_name_prefix="dante-openai")
        try:
            for p in pending:
                in_flight.add(pool.submit(self._complete_one, p))
                if len(in_flight) >= self.cfg.openai.concurrency:
                    break
            while in_flight:
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for fut in done:
                    if fut.exception() is not None:
                        error = error or fut.exception()
                    else:
                        yield fut.result()
                    if error is None:
                        nxt = next(pending, None)
                        if nxt is not None:
                            in_flight.add(pool.submit(self._complete_one, nxt))
        finally:
            if error is None and in_flight:  # the consumer stopped early (Ctrl-C, writer error)
                self._stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
        if error is not None:
            raise error

    def close(self) -> None:
        self._stop.set()
        self._client.close()
