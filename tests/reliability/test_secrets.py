"""Secrets and unsafe code. The API key (from the environment or from the recipe) never appears in
any file a run writes, in printed output, in log records or in exception messages, even when the
server quotes it back in its error bodies. Models load with trust_remote_code off unless the
recipe turns it on. Generated code runs only with the explicit evaluation flag."""

from __future__ import annotations

import logging
import sys
import types

import pytest
import yaml
from rel_support import count, train_recipe, write_train_cache

from dante.cache.run import run_cache
from dante.config import StudentConfig, TeacherConfig, load_recipe
from dante.errors import DanteError
from flaky_server import FlakyServer

KEY = "sk-QX7-SECRET-3b9f0e1d7c2a5e88"
PREFIX = '{"error": "server error'  # how the server's 500 bodies start: json.dumps({"error": ...})
pytestmark = pytest.mark.timeout(180)


def leaked(blob: str | bytes) -> list[str]:
    """Pieces of the key (10 characters or more) found in ``blob``: a cut-off key is a leak too."""
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    return [KEY[i : i + 10] for i in range(len(KEY) - 9) if KEY[i : i + 10] in text]


def invoke(args):
    from typer.testing import CliRunner

    from dante.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("where", ["env", "recipe"])
def test_api_key_never_written_printed_logged_or_raised(tmp_path, monkeypatch, caplog, student_dir, where):
    caplog.set_level(logging.DEBUG)  # httpx / httpcore debug records included
    broken = {"on": True}

    def script(text, attempt, body):
        i = int(text.split()[1].rstrip(":"))
        if i == 3 and broken["on"]:
            return "500"
        return {1: ("429", 0.01), 2: "badschema", 4: "503"}.get(i, "ok") if attempt == 1 else "ok"

    # the quoted key starts 10 characters before the client's 300-character excerpt ends
    pad = 300 - 10 - len(PREFIX) - len(" (you sent Bearer ")
    srv = FlakyServer(script, echo_auth=True, pad=pad)
    try:
        source = tmp_path / "prompts.jsonl"
        source.write_text("".join(f'{{"prompt": "Question {i}: what is {i} plus {i}?"}}\n' for i in range(8)))
        teacher = {
            "backend": "openai",
            "model": "fake-teacher",
            "base_url": srv.url,
            "api_key_env": "DANTE_TEST_KEY",
            "top_logprobs": 2,
            "max_new_tokens": 8,
            "concurrency": 2,
            "max_retries": 2,
            "request_timeout_s": 2,
            "backoff_base_s": 0.01,
            "backoff_max_s": 0.05,
        }
        if where == "recipe":
            teacher["api_key"] = KEY
            monkeypatch.delenv("DANTE_TEST_KEY", raising=False)
        else:
            monkeypatch.setenv("DANTE_TEST_KEY", KEY)
        data = train_recipe(tmp_path / "run", student_dir, tmp_path / "run" / "cache", steps=1, curriculum="shuffle")
        data.update(teacher=teacher, prompts={"source": str(source)}, cache={"shard_size": 3, "flush_every": 1})
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(yaml.safe_dump(data))

        said: list[str] = []
        failed = invoke(["cache", recipe])  # prompt 3 fails for good: the error quotes the server's body
        assert failed.exit_code == 1 and "HTTP 500" in failed.output, failed.output
        said.append(failed.output)
        with pytest.raises(DanteError) as err:  # the same failure through the Python API
            run_cache(load_recipe(recipe))
        e = err.value
        said += [str(e), repr(e), e.render(), e.message, e.hint or "", *map(str, e.args)]
        broken["on"] = False
        for args in (["cache", recipe], ["plan", recipe], ["train", recipe]):
            done = invoke(args)
            assert done.exit_code == 0, done.output
            said.append(done.output)
        said.append(caplog.text)
    finally:
        srv.close()
    assert srv.auth == {f"Bearer {KEY}"}, "the key is sent, in the Authorization header"
    assert srv.faults["500"] >= 3 and (tmp_path / "run" / "student" / "dante_manifest.json").is_file()
    for text in said:
        assert not leaked(text), f"key in output/log/exception: {leaked(text)}"
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not (where == "recipe" and p == recipe)]
    assert len(written) > 10
    for path in written:
        assert not leaked(path.read_bytes()), f"key written to {path}"
    count("secrets: files grepped for the API key", len(written))
    count("secrets: outputs, logs and exception messages grepped", len(said))
    count("faults: flaky teacher server (key echoed in error bodies)", sum(srv.faults.values()))


def test_a_wrong_typed_api_key_is_not_quoted_in_the_error(tmp_path):
    digits = "712345678901234567"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"teacher:\n  backend: openai\n  api_key: {digits}\n")
    result = invoke(["cache", recipe])
    count("secrets: outputs, logs and exception messages grepped")
    assert result.exit_code == 1 and "teacher.api_key" in result.output
    assert digits not in result.output


# --- trust_remote_code ----------------------------------------------------------------------


@pytest.fixture
def loader_calls(monkeypatch):
    """Record the keyword arguments of every transformers from_pretrained call (then load for real)."""
    import transformers

    calls: list[tuple[str, dict]] = []
    for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        real = cls.from_pretrained

        def spy(path, *args, _real=real, _name=cls.__name__, **kwargs):
            calls.append((_name, dict(kwargs)))
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    return calls


@pytest.mark.parametrize("allowed", [False, True])
def test_teacher_and_student_load_with_trust_remote_code_only_when_the_recipe_says(
    tmp_path, teacher_dir, student_dir, loader_calls, allowed
):
    from dante.teacher.hf import HFTeacher
    from dante.train.loop import train

    assert TeacherConfig().trust_remote_code is False and StudentConfig().trust_remote_code is False
    extra = {"trust_remote_code": True} if allowed else {}
    HFTeacher(TeacherConfig(model=str(teacher_dir), device="cpu", **extra)).close()
    data = train_recipe(tmp_path / "run", student_dir, write_train_cache(tmp_path / "cache", n=4), steps=1)
    data["student"].update(extra)
    train(load_recipe(data=data))
    assert {name for name, _ in loader_calls} == {"AutoTokenizer", "AutoModelForCausalLM"} and len(loader_calls) >= 4
    assert all(kw.get("trust_remote_code") is allowed for _, kw in loader_calls), loader_calls
    count("secrets: model loads checked for trust_remote_code", len(loader_calls))


@pytest.mark.parametrize("allowed", [False, True])
def test_vllm_teacher_passes_trust_remote_code_from_the_recipe(monkeypatch, teacher_dir, allowed):
    seen = {}

    class LLM:  # stands in for vllm.LLM (vLLM needs a GPU)
        def __init__(self, **kwargs):
            seen.update(kwargs)

        def get_tokenizer(self):
            return None

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM))
    from dante.teacher.vllm import VLLMTeacher

    VLLMTeacher(
        TeacherConfig(backend="vllm", model=str(teacher_dir), **({"trust_remote_code": True} if allowed else {}))
    )
    assert seen["trust_remote_code"] is allowed
    count("secrets: model loads checked for trust_remote_code")


def test_eval_models_load_with_trust_remote_code_only_when_the_recipe_says(tmp_path, monkeypatch):
    from dante.eval import run  # a broken import fails these security tests, it does not skip them

    recipe = load_recipe(
        data={
            "output_dir": str(tmp_path),
            "teacher": {"model": "org/teacher", "trust_remote_code": True},
            "student": {"model": "org/student"},
            "eval": {"models": ["teacher", "base", "org/other"]},
        }
    )
    refs = {r.label: r.trust_remote_code for r in run.model_refs(recipe)}
    assert refs == {"teacher": True, "base": False, "other": False}
    count("secrets: model loads checked for trust_remote_code", len(refs))


# --- generated code ---------------------------------------------------------------------------


def test_generated_code_runs_only_with_the_explicit_eval_flag(tmp_path, monkeypatch):
    from dante.benchmarks import local_module
    from dante.eval import run  # a broken import fails these security tests, it does not skip them

    he = local_module("humaneval_local/humaneval_utils.py")
    monkeypatch.delenv("DANTE_ALLOW_CODE_EXECUTION", raising=False)
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    sentinel = tmp_path / "generated-code-ran"
    program = f"def f():\n    open({str(sentinel)!r}, 'w').write('ran')\n    return 1\n"
    test = "def check(candidate):\n    assert candidate() == 1\n\ncheck(f)"

    # through the CLI: a code task without the flag is refused before any model is loaded
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path / "run"),
                "student": {"model": "/nonexistent/model"},
                "eval": {"suite": None, "models": ["base"]},
            }
        )
    )
    refused = invoke(["eval", recipe, "--task", "humaneval_local"])
    text = " ".join(refused.output.split())
    assert refused.exit_code == 1 and isinstance(refused.exception, SystemExit) and "Traceback" not in refused.output
    assert "eval.allow_code_execution" in text and "--allow-code-execution" in text
    assert not (tmp_path / "run" / "eval").exists()

    # the metric itself refuses outside an opted-in run: the program never starts
    with pytest.raises(RuntimeError, match="allow-code-execution"):
        he.pass_at_1([test], [[program]])
    assert not sentinel.exists()
    off = load_recipe(data={"eval": {"allow_code_execution": False}}).eval
    with run.code_execution(off), pytest.raises(RuntimeError):
        he.pass_at_1([test], [[program]])
    assert not sentinel.exists()

    # with the flag it runs (in a separate process with a timeout), and only inside the run
    on = load_recipe(data={"eval": {"allow_code_execution": True, "code_timeout_s": 10}}).eval
    with run.code_execution(on):
        assert he.pass_at_1([test], [[program]]) == {"pass@1": 1.0}
    assert sentinel.read_text() == "ran" and not he.execution_allowed()
    count("secrets: generated-code runs attempted without the flag (refused)", 3)
