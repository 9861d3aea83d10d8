"""openai teacher against a real HTTP server on 127.0.0.1 that fails on purpose (flaky_server.py,
the ``teacher_server`` fixture): retries, back-off, Retry-After, n fallback, bounded attempts,
both the chat and the completions API, and an API key that never leaks."""

import json
import math
import time

import pytest

from dante.cache.records import read_cache
from dante.cache.run import run_cache
from dante.config import load_recipe
from dante.errors import DanteError
from dante.teacher.openai import backoff_delay, parse_retry_after
from flaky_server import ENTROPY, TOKENS

KEY = "sk-dante-FAKE-7f3a9c11"


def prompts_file(tmp_path, n):
    f = tmp_path / "prompts.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"Question number {i}: what is {i} times 3?"}) + "\n" for i in range(n)))
    return f


def recipe(tmp_path, url, n_prompts=8, **teacher):
    data = {
        "output_dir": str(tmp_path / "run"),
        "teacher": {
            "backend": "openai",
            "model": "fake-teacher",
            "base_url": url,
            "api_key_env": "DANTE_TEST_KEY",
            "top_logprobs": 2,
            "max_new_tokens": 16,
            "concurrency": 4,
            "max_retries": 4,
            "backoff_base_s": 0.01,
            "backoff_max_s": 0.2,
            "request_timeout_s": 5,
            **teacher,
        },
        "prompts": {"source": str(prompts_file(tmp_path, n_prompts))},
        "cache": {"shard_size": 3, "flush_every": 1},
    }
    return load_recipe(data=data)


def flaky(text, attempt, body):
    """Each prompt meets a different failure first, then succeeds."""
    i = int(text.split()[2].rstrip(":"))
    failures = [("429", 0.05), "500", "drop", "badjson", "ok"][i % 5 :]
    return failures[attempt - 1] if attempt <= len(failures) else "ok"


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_flaky_server_every_prompt_exactly_once_with_entropy(tmp_path, teacher_server, monkeypatch, api):
    monkeypatch.setenv("DANTE_TEST_KEY", KEY)
    srv = teacher_server(flaky)
    summary = run_cache(recipe(tmp_path, srv.url, api=api, consistency_samples=2))
    records = read_cache(tmp_path / "run" / "cache")
    assert summary.written == 8 and len(records) == 8 and len({r.id for r in records}) == 8
    assert srv.auth == {f"Bearer {KEY}"}  # the key is sent, as a header
    assert set(srv.paths) == {"/v1/chat/completions" if api == "chat" else "/v1/completions"}
    assert max(srv.attempts.values()) >= 4  # 429, 500, dropped body and bad JSON were all retried
    for r in records:
        # hand value: p = (.5, .25), tail .25: H = .5 ln2 + .25 ln4 + .25 ln4 = 1.5 ln2 for every token
        assert 1.5 * math.log(2) == ENTROPY and r.output_entropy == pytest.approx(ENTROPY, abs=1e-12)
        assert r.teacher_text == f"The answer to {r.prompt!r} is {len(r.prompt)}." and r.completion_tokens == TOKENS
        # samples answer len, len+1: majority of 2 is 1 of them -> 0.5
        assert r.consistency_samples == 2 and r.self_consistency == 0.5
        assert r.difficulty_score == pytest.approx(0.5 * (1.5 * math.log(2) / 3) + 0.5 * 0.5)
        assert r.prompt_tokens == 11 and r.sampling["top_logprobs"] == 2


def test_server_rejecting_n_falls_back_to_separate_requests(tmp_path, teacher_server, monkeypatch):
    monkeypatch.setenv("DANTE_TEST_KEY", KEY)
    srv = teacher_server(lambda text, attempt, body: ("400", "n must be 1") if body.get("n", 1) > 1 else "ok")
    run_cache(recipe(tmp_path, srv.url, n_prompts=3, consistency_samples=3, concurrency=1))
    records = read_cache(tmp_path / "run" / "cache")
    assert len(records) == 3 and all(r.consistency_samples == 3 and r.self_consistency is not None for r in records)


def test_persistent_failure_stops_with_clear_error_keeps_records_and_hides_key(
    tmp_path, teacher_server, monkeypatch, capsys, caplog
):
    monkeypatch.setenv("DANTE_TEST_KEY", KEY)
    broken = {"on": True}
    srv = teacher_server(
        lambda text, attempt, body: "500" if broken["on"] and text.startswith("Question number 3:") else "ok"
    )
    r = recipe(tmp_path, srv.url, n_prompts=6, concurrency=1, max_retries=2)
    with pytest.raises(DanteError) as exc:
        run_cache(r)
    message = str(exc.value)
    assert "failed after 3 attempts" in message and "HTTP 500" in message and KEY not in message
    assert srv.attempts["Question number 3: what is 3 times 3?"] == 3
    cache = tmp_path / "run" / "cache"
    partial = [json.loads(line) for f in cache.glob(".partial-*.jsonl") for line in f.read_text().splitlines()]
    sealed = read_cache(cache)
    assert len(partial) + len(sealed) == 3  # the three prompts before the failing one are durable

    # no file anywhere, no log line, no printed output holds the key
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f
    out = capsys.readouterr()
    assert KEY not in out.out + out.err + caplog.text

    # fixed server + more retries (an operational setting): the same cache resumes
    broken["on"] = False
    summary = run_cache(recipe(tmp_path, srv.url, n_prompts=6, concurrency=1, max_retries=5))
    records = read_cache(cache)
    assert summary.skipped == 3 and summary.written == 3
    assert len(records) == 6 and len({x.id for x in records}) == 6


def test_unauthorised_is_not_retried(tmp_path, teacher_server, monkeypatch):
    monkeypatch.setenv("DANTE_TEST_KEY", KEY)
    srv = teacher_server(lambda text, attempt, body: ("400", f"bad key {KEY}"))
    with pytest.raises(DanteError) as exc:
        run_cache(recipe(tmp_path, srv.url, n_prompts=1))
    assert "HTTP 400" in str(exc.value) and KEY not in str(exc.value) and sum(srv.attempts.values()) == 1


def test_retry_after_is_honoured(tmp_path, teacher_server, monkeypatch):
    monkeypatch.setenv("DANTE_TEST_KEY", KEY)
    srv = teacher_server(lambda text, attempt, body: ("429", 0.4) if attempt == 1 else "ok")
    t0 = time.perf_counter()
    run_cache(recipe(tmp_path, srv.url, n_prompts=1, backoff_base_s=0.001, backoff_max_s=5))
    assert time.perf_counter() - t0 >= 0.4


def test_backoff_and_retry_after_parsing():
    import random

    rng = random.Random(0)
    delays = [backoff_delay(i, 1.0, 10.0, rng=rng) for i in range(6)]
    assert all(0.5 * min(10, 2**i) <= d <= min(10, 2**i) for i, d in enumerate(delays))
    assert backoff_delay(0, 1.0, 10.0, retry_after=7.0) == 7.0  # the server's wait wins
    assert backoff_delay(0, 1.0, 10.0, retry_after=99.0) == 10.0  # up to the cap
    assert parse_retry_after("3") == 3.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)


def test_missing_base_url_is_a_config_error(monkeypatch):
    from dante.config import TeacherConfig
    from dante.teacher import make_teacher

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(DanteError, match="base_url"):
        make_teacher(TeacherConfig(backend="openai", model="m"))


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_stored_payload_from_a_server_validates(tmp_path, teacher_server, monkeypatch, api):
    from dante.cache.payload import decode
    from dante.cache.records import validate_cache

    monkeypatch.setenv("DANTE_TEST_KEY", KEY)
    srv = teacher_server(lambda *a: "ok")
    run_cache(recipe(tmp_path, srv.url, api=api, store_logprobs=20))
    records = read_cache(tmp_path / "run" / "cache")
    assert len(records) == 8
    for r in records:
        p = decode(r.token_logprobs)
        assert p.text_bytes().decode() == r.teacher_text and len(p) == r.completion_tokens == TOKENS
        assert p.logprobs == pytest.approx([math.log(0.5)] * TOKENS, abs=1e-3)
        assert [alp for _, alp in p.top[0]] == pytest.approx([math.log(0.5), math.log(0.25)], abs=1e-3)
    assert validate_cache(tmp_path / "run" / "cache") == (8, [])
    manifest = json.loads((tmp_path / "run" / "cache" / "manifest.json").read_text())
    assert manifest["logprobs_returned"] == {"asked": 8, "entropy": 8, "payload": 8}


def test_a_server_that_ignores_logprobs_is_said_and_stops_when_the_payload_is_needed(
    tmp_path, teacher_server, monkeypatch, capsys
):
    monkeypatch.setenv("DANTE_TEST_KEY", KEY)
    monkeypatch.setattr("flaky_server.FlakyServer.ignore_logprobs", True, raising=False)
    srv = teacher_server(lambda *a: "ok")
    with pytest.raises(DanteError, match="returned no logprobs") as err:
        run_cache(recipe(tmp_path, srv.url, store_logprobs=5, concurrency=1))
    assert "teacher.store_logprobs" in err.value.render()
    # entropy only: a warning, records with null entropy, and the manifest says what came back
    (tmp_path / "b").mkdir()
    summary = run_cache(recipe(tmp_path / "b", srv.url, concurrency=1))
    assert summary.written == 8
    assert "returned no logprobs" in capsys.readouterr().err
    records = read_cache(tmp_path / "b" / "run" / "cache")
    assert all(r.output_entropy is None for r in records)
    manifest = json.loads((tmp_path / "b" / "run" / "cache" / "manifest.json").read_text())
    assert manifest["logprobs_returned"] == {"asked": 8, "entropy": 0, "payload": 0}
