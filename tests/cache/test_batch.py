"""``teacher.dispatch: batch`` and the batch file mode against a stand-in Batch API on 127.0.0.1
(fake_batch_api.py): the cache it writes equals the one the synchronous teacher writes, request
by request; limits split the work; provider failures are listed and retried by the next run in
a smaller batch; bad result lines are located; the requests file is the format vLLM's
run_batch documents, field by field."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_batch_api import FakeBatchAPI  # noqa: E402

from dante.cache.manifest import read_manifest  # noqa: E402
from dante.cache.records import read_cache  # noqa: E402
from dante.cache.run import run_cache  # noqa: E402
from dante.config import load_recipe  # noqa: E402
from dante.errors import DanteError, DataError  # noqa: E402
from dante.prompts import prompt_set  # noqa: E402
from dante.teacher.batch import SAMPLES, URLS, request_lines  # noqa: E402

KEY = "sk-dante-BATCH-51c0"


def recipe(tmp_path: Path, url: str, n: int = 6, *, folder: str = "run", engine: str = "batch", **teacher):
    prompts = tmp_path / "prompts.jsonl"
    if not prompts.exists():
        prompts.write_text(
            "".join(json.dumps({"prompt": f"Question {i}: what is {i} plus 4?"}) + "\n" for i in range(n))
        )
    data = {
        "output_dir": str(tmp_path / folder),
        "teacher": {
            "backend": "openai",
            "model": "fake-teacher",
            "base_url": url,
            "api_key_env": "DANTE_TEST_KEY",
            "top_logprobs": 2,
            "store_logprobs": 2,
            "max_new_tokens": 16,
            "backoff_base_s": 0.01,
            "backoff_max_s": 0.05,
            **teacher,
        },
        "prompts": {"source": str(prompts)},
        "cache": {"engine": engine, "shard_size": 4, "batch": {"poll_interval_s": 0.01, "poll_max_s": 0.02}},
    }
    return load_recipe(data=data)


@pytest.fixture()
def api(monkeypatch):
    monkeypatch.setenv("DANTE_TEST_KEY", KEY)
    server = FakeBatchAPI(api_key=KEY)
    yield server
    server.close()


def records(r) -> dict[str, dict]:
    """Every record written so far: sealed shards and the partial one (a run that stopped early)."""
    files = sorted(r.cache_dir.glob("shard-*.jsonl")) + sorted(r.cache_dir.glob(".partial-*.jsonl"))
    found = [rec for f in files for rec in read_cache(f)]
    assert len(found) == len({rec.id for rec in found})  # never twice
    return {rec.id: rec.model_dump() for rec in found}


@pytest.mark.parametrize("api_kind", ["chat", "completions"])
def test_a_batched_cache_equals_the_synchronous_one(tmp_path, api, teacher_server, api_kind):
    srv = teacher_server(lambda text, attempt, body: "ok")
    sync = recipe(tmp_path, srv.url, folder="sync", engine="local", api=api_kind, consistency_samples=3)
    run_cache(sync)
    batched = recipe(tmp_path, api.url, folder="batch", api=api_kind, consistency_samples=3)
    summary = run_cache(batched)
    assert summary.written == 6 and not summary.failed and not summary.open_batches
    assert records(batched) == records(sync)  # text, entropy, self-consistency, payload: all alike
    manifest = read_manifest(batched.cache_dir)
    assert manifest["complete"] is True
    (b,) = manifest["batches"]
    assert b["status"] == "ingested" and b["requests"] == 12 and b["batch_id"].startswith("batch_")
    assert api.count("POST", "/batches") == 1 and api.count("POST", "/files") == 1
    # the request lines are the synchronous requests' bodies, on the endpoint the API names
    sent = [json.loads(x) for x in api.files[b["input_file_id"]].splitlines()]
    assert {x["url"] for x in sent} == {URLS[api_kind]}
    assert [x["custom_id"] for x in sent][:2] == [sent[0]["custom_id"], sent[0]["custom_id"] + SAMPLES]
    # a second run finds everything written: no provider call at all
    calls = len(api.calls)
    assert run_cache(batched).written == 0 and len(api.calls) == calls


def test_limits_split_the_work_and_a_prompt_stays_in_one_file(tmp_path, api):
    r = recipe(tmp_path, api.url, n=7, consistency_samples=2)
    r.teacher.batch_api.max_requests = 4  # two prompts (four requests) per file
    run_cache(r)
    batches = read_manifest(r.cache_dir)["batches"]
    assert [b["requests"] for b in batches] == [4, 4, 4, 2]
    for b in batches:
        assert len({cid.removesuffix(SAMPLES) for cid in b["custom_ids"]}) * 2 == b["requests"]
    assert len(records(r)) == 7 and api.count("POST", "/batches") == 4


def test_failed_and_expired_requests_are_listed_then_retried_in_a_smaller_batch(tmp_path, api):
    r = recipe(tmp_path, api.url, n=6)
    ids = [p.id for p in prompt_set(r)]
    api.fail_ids = {ids[1]}
    api.end = "expired"  # the provider answers the first half, then the window ends
    first = run_cache(r)
    manifest = read_manifest(r.cache_dir)
    assert first.written == 2 and sorted(first.failed) == sorted([ids[1], *ids[3:]])
    failed = {f["id"]: f["error"] for f in manifest["failed_prompts"]}
    assert "the model crashed" in failed[ids[1]] and "expired" in failed[ids[4]]
    assert manifest["complete"] is False and set(records(r)) == {ids[0], ids[2]}
    api.fail_ids, api.end = set(), "completed"
    second = run_cache(r)
    assert second.written == 4 and not second.failed
    batches = read_manifest(r.cache_dir)["batches"]
    assert [b["requests"] for b in batches] == [6, 4]  # only the failed ones, in a new batch
    assert set(records(r)) == set(ids) and read_manifest(r.cache_dir)["complete"] is True


def test_a_cancelled_or_failed_batch_writes_nothing_empty(tmp_path, api):
    r = recipe(tmp_path, api.url, n=4)
    api.end = "failed"
    summary = run_cache(r)
    assert summary.written == 0 and len(summary.failed) == 4 and records(r) == {}
    assert all("no result" in f["error"] for f in read_manifest(r.cache_dir)["failed_prompts"])


def test_waiting_can_be_left_to_a_later_run(tmp_path, api):
    r = recipe(tmp_path, api.url, n=3)
    r.teacher.batch_api.wait_hours = 0  # submit and stop
    summary = run_cache(r)
    assert summary.written == 0 and summary.open_batches == 1
    (b,) = read_manifest(r.cache_dir)["batches"]
    assert b["status"] == "validating" and read_manifest(r.cache_dir)["complete"] is False
    r.teacher.batch_api.wait_hours = 1
    assert run_cache(r).written == 3
    assert api.count("POST", "/batches") == 1  # the same batch, polled and ingested


def test_no_logprobs_from_the_provider_stops_when_the_payload_is_needed(tmp_path, api):
    api.no_logprobs = True
    with pytest.raises(DanteError, match="returned no logprobs") as exc:
        run_cache(recipe(tmp_path, api.url, n=3))
    assert exc.value.field == "teacher.store_logprobs"


def test_a_body_that_is_not_a_completion_is_located_and_the_rest_is_kept(tmp_path, api):
    r = recipe(tmp_path, api.url, n=4)
    ids = [p.id for p in prompt_set(r)]
    api.bad_body_ids = {ids[2]}
    with pytest.raises(DataError, match=rf"custom_id '{ids[2]}': response.body: not a completion"):
        run_cache(r)
    assert set(records(r)) == {ids[0], ids[1], ids[3]}
    api.bad_body_ids = set()
    assert run_cache(r).written == 1 and len(records(r)) == 4


def test_the_backend_must_be_openai(tmp_path):
    r = load_recipe(data={"output_dir": str(tmp_path), "cache": {"engine": "batch"}})
    with pytest.raises(DanteError, match="teacher.backend: openai") as exc:
        run_cache(r)
    assert exc.value.field == "teacher.dispatch"


# -- file mode: vLLM's run_batch and any tool of the format ---------------------------------

VLLM_INPUT_EXAMPLE = (
    '{"custom_id": "request-1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": '
    '"meta-llama/Meta-Llama-3-8B-Instruct", "messages": [{"role": "system", "content": "You are a helpful '
    'assistant."},{"role": "user", "content": "Hello world!"}],"max_completion_tokens": 1000}}'
)
VLLM_OUTPUT_EXAMPLE = {
    "id": "vllm-383d1c59835645aeb2e07d004d62a826",
    "custom_id": "request-1",
    "response": {
        "status_code": 200,
        "request_id": "vllm-batch-a8a3fd2d2bd4462ca9acb5efbe7bb2f0",
        "body": {
            "id": "cmpl-71c3d6c6e5d14a5b86a3bb8d2bc27a33",
            "object": "chat.completion",
            "created": 1713000000,
            "model": "meta-llama/Meta-Llama-3-8B-Instruct",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello! How can I assist you today?"},
                    "logprobs": None,
                    "finish_reason": "stop",
                    "stop_reason": None,
                }
            ],
            "usage": {"prompt_tokens": 18, "total_tokens": 29, "completion_tokens": 11},
        },
    },
    "error": None,
}


def test_the_requests_file_has_the_fields_of_vllms_run_batch_format(tmp_path):
    example = json.loads(VLLM_INPUT_EXAMPLE)
    r = recipe(tmp_path, "http://unused/v1", n=2, top_logprobs=0, store_logprobs=0)
    out = tmp_path / "requests.jsonl"
    summary = run_cache(r, write_requests=out)
    assert summary.requests == 2 and summary.written == 0 and records(r) == {}
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    for line in lines:
        assert set(line) == set(example)  # custom_id, method, url, body: nothing else
        assert (line["method"], line["url"]) == (example["method"], example["url"])
        assert isinstance(line["custom_id"], str) and line["body"]["model"] == "fake-teacher"
        assert line["body"]["messages"][-1]["role"] == example["body"]["messages"][-1]["role"]
    # the same prompts' lines equal what request_lines gives (one code path for both modes)
    assert lines == list(request_lines(r, prompt_set(r)))


def test_vllm_style_results_ingest_exactly_once_and_bad_lines_are_located(tmp_path):
    r = recipe(tmp_path, "http://unused/v1", n=3, top_logprobs=0, store_logprobs=0)
    ids = [p.id for p in prompt_set(r)]
    results = tmp_path / "results.jsonl"
    good = [{**VLLM_OUTPUT_EXAMPLE, "custom_id": i} for i in ids[:2]]
    unknown = {**VLLM_OUTPUT_EXAMPLE, "custom_id": "request-1"}
    text = "".join(json.dumps(x) + "\n" for x in [good[0], unknown, good[1]])
    results.write_text(text + json.dumps({**VLLM_OUTPUT_EXAMPLE, "custom_id": ids[2]})[:60])  # cut mid-line
    with pytest.raises(DataError) as exc:
        run_cache(r, ingest=[results])
    message = str(exc.value)
    assert f"{results}:2: custom_id: 'request-1' is not a request" in message
    assert f"{results}:4: truncated line" in message and "2 records written and kept" in message
    got = records(r)
    assert set(got) == set(ids[:2]) and got[ids[0]]["teacher_text"] == "Hello! How can I assist you today?"
    assert got[ids[0]]["completion_tokens"] == 11 and got[ids[0]]["output_entropy"] is None
    # ingesting the same file again writes nothing twice; the full file finishes the cache
    results.write_text(
        text.replace(json.dumps(unknown) + "\n", "") + json.dumps({**good[0], "custom_id": ids[2]}) + "\n"
    )
    assert run_cache(r, ingest=[results]).written == 1
    assert sorted(records(r)) == sorted(ids) and len(read_cache(r.cache_dir)) == 3


def test_the_cli_writes_requests_and_ingests_results(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from dante.cli import app

    r = recipe(tmp_path, "http://unused/v1", n=2, top_logprobs=0, store_logprobs=0)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**json.loads(r.model_dump_json(exclude={"source_file"}))}))
    out = tmp_path / "requests.jsonl"
    result = CliRunner().invoke(app, ["cache", str(path), "--write-requests", str(out)])
    assert result.exit_code == 0, result.output
    assert "requests written │ 2" in result.output and len(out.read_text().splitlines()) == 2
    results = tmp_path / "results.jsonl"
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    results.write_text("".join(json.dumps({**VLLM_OUTPUT_EXAMPLE, "custom_id": x["custom_id"]}) + "\n" for x in lines))
    result = CliRunner().invoke(app, ["cache", str(path), "--ingest", str(results)])
    assert result.exit_code == 0, result.output
    assert len(records(r)) == 2 and read_manifest(r.cache_dir)["complete"] is True
    both = CliRunner().invoke(app, ["cache", str(path), "--ingest", str(results), "--write-requests", str(out)])
    assert both.exit_code != 0 and "two steps" in both.output
