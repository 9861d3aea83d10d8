"""A flaky teacher server: `dante cache` with the openai backend against a local server
(tests/flaky_server.py, 127.0.0.1 only) that answers 429 + Retry-After, 500, 503, hangs past the
timeout, drops the connection mid-body or before answering, and returns malformed JSON. The
cache ends with every prompt exactly once; the server counts that each prompt was retried
exactly as often as it failed (bounded, never re-asked once answered); a persistent failure
stops with a clear error after the configured attempts and keeps every answered record."""

from __future__ import annotations

import pytest
import yaml
from rel_support import cache_state, count

from dante.cache.records import read_cache, validate_cache
from dante.config import PromptsConfig
from dante.prompts import load_prompts
from flaky_server import ENTROPY, FlakyServer

KEY = "sk-reliability-FAKE-7d1e0c55aa"
TIMEOUT = 0.25
pytestmark = pytest.mark.timeout(120)
# prompt i meets FAILURES[i % len(FAILURES)] in order, then an answer
FAILURES = [
    [("429", 0.15)],
    ["500"],
    ["503"],
    [("hang", 1.0)],
    ["drop"],
    ["reset"],
    ["badjson"],
    ["badschema"],
    ["503", ("429", 0), "drop", "badjson", "reset"],  # five in a row: max_retries=5 still gets through
    [],
]


def prompt_number(text: str) -> int:
    return int(text.split()[1].rstrip(":"))


def write_recipe(tmp_path, url: str, n: int, **teacher):
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(f'{{"prompt": "Question {i}: what is {i} plus {i}?"}}\n' for i in range(n)))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path / "run"),
                "teacher": {
                    "backend": "openai",
                    "model": "fake-teacher",
                    "base_url": url,
                    "api_key_env": "DANTE_TEST_KEY",
                    "top_logprobs": 2,
                    "max_new_tokens": 8,
                    "concurrency": 4,
                    "max_retries": 5,
                    "request_timeout_s": TIMEOUT,
                    "backoff_base_s": 0.01,
                    "backoff_max_s": 0.3,
                    **teacher,
                },
                "prompts": {"source": str(source)},
                "cache": {"shard_size": 4, "flush_every": 1},
            }
        )
    )
    ids = {p.prompt: p.id for p in load_prompts(PromptsConfig(source=str(source)))}
    return recipe, tmp_path / "run" / "cache", ids


def invoke(args):
    from typer.testing import CliRunner

    from dante.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def tally(srv: FlakyServer) -> None:
    for kind, n in srv.faults.items():
        count(f"faults: flaky teacher server ({kind})", n)


def test_flaky_server_every_prompt_exactly_once_retries_bounded(tmp_path, teacher_server, monkeypatch):
    monkeypatch.setenv("DANTE_TEST_KEY", KEY)
    srv = teacher_server(
        lambda text, attempt, body: (FAILURES[prompt_number(text) % len(FAILURES)] + ["ok"])[attempt - 1]
    )
    n = 2 * len(FAILURES)
    recipe, cache, ids = write_recipe(tmp_path, srv.url, n)
    done = invoke(["cache", recipe])
    tally(srv)
    assert done.exit_code == 0, done.output
    records = read_cache(cache)
    assert sorted(r.id for r in records) == sorted(ids.values()) and validate_cache(cache) == (n, [])
    for r in records:
        assert (
            r.teacher_text == f"The answer to {r.prompt!r} is {len(r.prompt)}."
            and r.output_entropy == pytest.approx(ENTROPY)
        )
    count("records checked: flaky server", n)

    assert not srv.overflow and srv.auth == {f"Bearer {KEY}"}
    for text, attempts in srv.attempts.items():  # server-side: retried exactly as often as it failed
        assert attempts == len(FAILURES[prompt_number(text) % len(FAILURES)]) + 1, text
    assert srv.requests == sum(len(FAILURES[i % len(FAILURES)]) + 1 for i in range(n))
    for text, times in srv.times.items():
        first = FAILURES[prompt_number(text) % len(FAILURES)][:1]
        if first and first[0][0] == "429":  # Retry-After honoured
            assert times[1] - times[0] >= first[0][1] - 0.01
        if first and first[0][0] == "hang":  # the client gave up at its timeout, not when the server did
            assert TIMEOUT - 0.01 <= times[1] - times[0] < 0.9


def test_persistent_failure_stops_after_the_configured_attempts_and_keeps_answers(
    tmp_path, teacher_server, monkeypatch
):
    monkeypatch.setenv("DANTE_TEST_KEY", KEY)
    broken = {"on": True}
    cycle = ["503", "500", "drop", "badjson", ("hang", 0.6), "reset"]

    def script(text, attempt, body):
        i = prompt_number(text)
        if i == 5 and broken["on"]:
            return cycle[(attempt - 1) % len(cycle)]
        return ("429", 0.05) if i == 2 and attempt == 1 else "ok"

    srv = teacher_server(script)
    recipe, cache, ids = write_recipe(tmp_path, srv.url, 10, concurrency=2, max_retries=3)
    failed = invoke(["cache", recipe])
    tally(srv)
    text = " ".join(failed.output.split())
    assert failed.exit_code == 1 and isinstance(failed.exception, SystemExit) and "Traceback" not in failed.output, text
    assert "failed after 4 attempts" in text and f"{srv.url}/chat/completions" in text and "re-run to resume" in text
    bad = "Question 5: what is 5 plus 5?"
    assert srv.attempts[bad] == 4, "max_retries=3 means exactly 4 attempts"
    kept = cache_state(cache).ids
    assert {ids[t] for t in srv.served_ok} <= kept, "every answer the server gave is in the cache"
    assert ids[bad] not in kept
    count("records checked: flaky server", len(kept))

    answered = dict(srv.attempts)
    broken["on"] = False  # the server recovers; the same command resumes
    done = invoke(["cache", recipe])
    assert done.exit_code == 0, done.output
    records = read_cache(cache)
    assert sorted(r.id for r in records) == sorted(ids.values()) and validate_cache(cache) == (10, [])
    for t in answered:
        if ids[t] in kept:
            assert srv.attempts[t] == answered[t], f"{t!r} was asked again after it was answered"
    assert srv.attempts[bad] == 5 and not srv.overflow
    count("records checked: flaky server", 10)
