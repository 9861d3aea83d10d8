"""`dante eval` through the real lm-eval: a tiny random model end to end, and the scoring of the
offline tasks checked with a stand-in model that answers with the gold answer."""

import json
import re

import pytest

from dante.benchmarks import local_module, spec_for
from dante.config import load_recipe
from dante.errors import ConfigError
from dante.eval.run import evaluate, model_refs, run_task, task_manager

SCORE_KEYS = {
    "model",
    "task",
    "benchmark",
    "shots",
    "metric",
    "filter",
    "primary",
    "value",
    "stderr",
    "ci95",
    "n_samples",
    "n_total",
    "limit",
    "lm_eval_version",
    "harness",
    "max_gen_toks",
    "date",
}


def tiny_recipe(tmp_path, student_dir, **eval_overrides):
    data = {
        "name": "tiny-eval",
        "output_dir": str(tmp_path / "run"),
        "student": {"model": str(student_dir)},
        "eval": {
            "suite": None,
            "tasks": ["gsm8k_local"],
            "models": ["base"],
            "limit": 5,
            "max_gen_toks": 8,
            "device": "cpu",
            "dtype": "float32",
            "batch_size": 5,
            **eval_overrides,
        },
    }
    return load_recipe(data=data)


def test_tiny_model_on_gsm8k_local_writes_scores(tmp_path, student_dir):
    recipe = tiny_recipe(tmp_path, student_dir)
    summary = evaluate(recipe)
    model_dir = tmp_path / "run" / "eval" / "base"
    scores = json.loads((model_dir / "scores.json").read_text())
    rows = scores["scores"]
    assert {(r["metric"], r["filter"]) for r in rows} == {
        ("exact_match", "strict-match"),
        ("exact_match", "flexible-extract"),
    }
    for row in rows:
        assert row.keys() >= SCORE_KEYS
        assert 0.0 <= row["value"] <= 1.0
        assert row["task"] == "gsm8k_local" and row["shots"] == 8 and row["n_samples"] == 5 and row["n_total"] == 1319
        assert row["lm_eval_version"].startswith("0.4") and row["limit"] == 5
    (primary,) = [r for r in rows if r["primary"]]
    assert primary["filter"] == "strict-match" and 0.0 <= primary["ci95"][0] <= primary["ci95"][1] <= 1.0
    raw = json.loads((model_dir / "results_gsm8k_local.json").read_text())
    assert raw["n-samples"]["gsm8k_local"]["effective"] == 5 and "samples" not in raw
    samples = [json.loads(line) for line in (model_dir / "samples_gsm8k_local.jsonl").read_text().splitlines()]
    assert {s["doc_id"] for s in samples} == set(range(5))  # one record per doc and filter
    assert (model_dir / "resolved_recipe.yaml").is_file() and (
        tmp_path / "run" / "eval" / "resolved_recipe.yaml"
    ).is_file()
    assert summary.rows == [primary] and "gsm8k_local" in str(summary)


class GoldLM:
    """Stand-in for a model: answers each GSM8K question with its gold solution and each HumanEval
    prompt with the canonical solution, so a correct task definition scores 1.0."""

    def __new__(cls, answers: dict[str, str]):
        from lm_eval.api.model import LM

        class _Gold(LM):
            def generate_until(self, requests, disable_tqdm=False):
                return [self.answer(r.args[0]) for r in requests]

            def answer(self, context):
                for key, text in answers.items():
                    if context.endswith(key):
                        return text
                raise AssertionError(f"no gold answer for context ending {context[-80:]!r}")

            def loglikelihood(self, requests, disable_tqdm=False):
                raise NotImplementedError

            def loglikelihood_rolling(self, requests, disable_tqdm=False):
                raise NotImplementedError

        return _Gold()


def test_gsm8k_local_scores_gold_answers_as_correct(tmp_path):
    gsm = local_module("gsm8k_local/gsm8k_utils.py")
    rows = gsm.read_rows("600:605")
    answers = {f"Question: {r['question']}\nAnswer:": " " + r["answer"] for r in rows}
    cfg = load_recipe(data={"eval": {"limit": 5}}).eval
    spec = spec_for("gsm8k_local_heldout")
    raw = run_task(GoldLM(answers), spec, cfg, task_manager([spec]))
    result = raw["results"]["gsm8k_local_heldout"]
    assert result["exact_match,strict-match"] == 1.0
    assert raw["n-shot"]["gsm8k_local_heldout"] == 8
    prompt = raw["samples"]["gsm8k_local_heldout"][0]["arguments"][0][0]
    assert prompt.count("Question:") == 9 and prompt.startswith("Question: There are 15 trees")


def test_gsm8k_local_scores_wrong_answers_as_wrong(tmp_path):
    gsm = local_module("gsm8k_local/gsm8k_utils.py")
    rows = gsm.read_rows("0:3")
    answers = {f"Question: {r['question']}\nAnswer:": re.sub(r"#### .*", "#### 123456789", r["answer"]) for r in rows}
    cfg = load_recipe(data={"eval": {"limit": 3}}).eval
    spec = spec_for("gsm8k_local")
    raw = run_task(GoldLM(answers), spec, cfg, task_manager([spec]))
    assert raw["results"]["gsm8k_local"]["exact_match,strict-match"] == 0.0


def test_humaneval_local_passes_canonical_solutions_with_opt_in(tmp_path):
    from dante.eval.run import code_execution

    he = local_module("humaneval_local/humaneval_utils.py")
    answers = {p["prompt"]: p["canonical_solution"] for p in he.read_problems()[:3]}
    cfg = load_recipe(data={"eval": {"limit": 3, "allow_code_execution": True, "code_timeout_s": 10}}).eval
    spec = spec_for("humaneval_local")
    with code_execution(cfg):
        raw = run_task(GoldLM(answers), spec, cfg, task_manager([spec]))
    assert raw["results"]["humaneval_local"]["pass@1,create_test"] == 1.0


def test_student_ref_needs_a_trained_checkpoint(tmp_path):
    recipe = load_recipe(data={"output_dir": str(tmp_path), "eval": {"models": ["student"]}})
    with pytest.raises(ConfigError, match="dante train"):
        model_refs(recipe)


def test_model_labels_for_paths_and_roles(tmp_path, student_dir):
    recipe = load_recipe(
        data={
            "output_dir": str(tmp_path),
            "student": {"model": str(student_dir)},
            "teacher": {"model": "org/teacher"},
            "eval": {"models": ["base", "teacher", str(student_dir), "/x/model.Q4.gguf"]},
        }
    )
    labels = [m.label for m in model_refs(recipe)]
    assert labels[:2] == ["base", "teacher"] and labels[2] == student_dir.name and labels[3] == "model.Q4"


def test_contamination_note_when_prompts_share_gsm8k_rows():
    from dante.eval.run import contamination_note

    overlap = load_recipe(data={"prompts": {"source": "data/gsm8k/test.jsonl", "rows": "0:600"}})
    assert contamination_note(overlap, spec_for("gsm8k_local")).startswith("600 evaluated rows")
    assert contamination_note(overlap, spec_for("gsm8k_local_heldout")) is None
    everything = load_recipe(data={"prompts": {"source": "data/gsm8k/test.jsonl"}})
    assert contamination_note(everything, spec_for("gsm8k_local_heldout")) is not None


def test_procedural_task_scores_the_generators_answers_as_correct_and_others_as_wrong():
    import reasoning_gym  # noqa: F401  (make install has the procedural extra: a broken import fails)

    from dante.procedural import generate

    spec = spec_for("rg_chain_sum_2x2_validation")
    items = generate("chain_sum", "validation", 6, settings={"min_terms": 2, "max_terms": 2, "max_digits": 2})
    cfg = load_recipe(data={"eval": {"limit": 6}}).eval
    right = {i.question: f"The final answer is {i.answer}." for i in items}
    raw = run_task(GoldLM(right), spec, cfg, task_manager([spec]))
    assert raw["results"]["rg_chain_sum_2x2_validation"]["exact_match,none"] == 1.0
    wrong = {i.question: f"The final answer is {int(i.answer) + 1}." for i in items}
    raw = run_task(GoldLM(wrong), spec, cfg, task_manager([spec]))
    assert raw["results"]["rg_chain_sum_2x2_validation"]["exact_match,none"] == 0.0
    assert raw["n-shot"]["rg_chain_sum_2x2_validation"] == 0


def test_contamination_note_for_procedural_prompts():
    from dante.eval.run import contamination_note

    def recipe(task, split):
        return load_recipe(data={"prompts": {"source": f"reasoning_gym:{task}", "split": split, "limit": 4}})

    test_task = spec_for("rg_chain_sum_2x2")
    assert contamination_note(recipe("chain_sum", "train"), test_task) is None
    assert "test split this task evaluates" in contamination_note(recipe("chain_sum", "test"), test_task)
    assert contamination_note(recipe("chain_sum", "test"), spec_for("rg_chain_sum_2x2_validation")) is None
    assert "derived from GSM8K test" in contamination_note(recipe("gsm_symbolic", "train"), spec_for("gsm8k_local"))
    assert contamination_note(recipe("gsm_symbolic", "train"), test_task) is None


def test_vllm_backend_maps_the_settings_and_says_what_it_needs(tmp_path, student_dir):
    """eval.backend: vllm: the arguments lm-eval's VLLM gets (a LoRA student as vLLM's LoRA
    request), and a clear error where vLLM is not installed (CI, this machine)."""
    from importlib.util import find_spec

    from dante.eval.run import ModelRef, evaluate, vllm_model_args
    from dante.models import resolve_model

    recipe = tiny_recipe(
        tmp_path,
        student_dir,
        backend="vllm",
        vllm={"tensor_parallel_size": 2, "data_parallel_size": 4, "max_model_len": 4096},
        dtype="bfloat16",
        batch_size=1,
    )
    model = ModelRef("student", str(student_dir), peft=str(tmp_path / "adapter"))
    args = vllm_model_args(model, resolve_model(model.ref), recipe.eval, lora_rank=64)
    assert args == {
        "pretrained": str(student_dir),
        "dtype": "bfloat16",
        "batch_size": "auto",
        "tensor_parallel_size": 2,
        "data_parallel_size": 4,
        "gpu_memory_utilization": 0.9,
        "trust_remote_code": False,
        "seed": 1234,
        "max_model_len": 4096,
        "lora_local_path": str(tmp_path / "adapter"),
        "max_lora_rank": 64,
    }
    if find_spec("vllm") is None:
        with pytest.raises(ConfigError, match="eval.backend"):
            evaluate(recipe)


def test_thinking_models_get_their_budget_and_their_thinking_cut_before_scoring(tmp_path, student_dir):
    """eval.think_end_token reaches lm-eval's model (which cuts each generation after the marker
    before the task extracts an answer: checked on the pinned version), and a model's own
    generation budget is used and recorded."""
    from lm_eval.models.utils import postprocess_generated_text

    from dante.eval.run import ModelRef, generation_budget, load_lm

    assert postprocess_generated_text("<think>#### 1, or</think>\n\n#### 7", ["\n\n\n"], "</think>") == "#### 7"
    recipe = tiny_recipe(tmp_path, student_dir, think_end_token="</think>", max_gen_toks_by_model={"base": 6})
    assert generation_budget(recipe.eval, "base") == 6 and generation_budget(recipe.eval, "student") == 8
    lm, _, _ = load_lm(ModelRef("base", str(student_dir)), recipe.eval)
    assert lm.think_end_token == "</think>"
    evaluate(recipe)
    info = json.loads((tmp_path / "run" / "eval" / "base" / "dante_gsm8k_local.json").read_text())
    assert (info["max_gen_toks"], info["think_end_token"]) == (6, "</think>")
    # every generation also kept as written, before lm-eval cuts the thinking (the report's lengths)
    raw = (tmp_path / "run" / "eval" / "base" / "generations_gsm8k_local.jsonl").read_text().splitlines()
    samples = (tmp_path / "run" / "eval" / "base" / "samples_gsm8k_local.jsonl").read_text().splitlines()
    assert len(raw) == len({json.loads(line)["doc_id"] for line in samples}) == 5  # a row per filter in samples
    kept = {json.loads(line)["doc_id"]: json.loads(line)["text"] for line in raw}  # in question order
    assert [json.loads(line)["doc_id"] for line in raw] == sorted(kept)
    for line in samples:  # each kept generation is the one its question's logged response came from
        row = json.loads(line)
        assert row["resps"][0][0] in kept[row["doc_id"]]


def test_kept_generations_are_paired_with_their_questions_in_any_generation_order(monkeypatch):
    """lm-eval generates longest context first and hands its cache hook each continuation right
    after decoding it (the pinned HFLM.generate_until, read: tok_decode then add_partial per
    continuation, then get_original); the kept file is in question order with doc ids, the same
    question asked twice included. The tiny random model above writes the same text for every
    question, so the pairing is checked here, on lm-eval's call sequence."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from dante.eval.run import generations_jsonl, thinking_hflm

    def generate_until(self, requests, disable_tqdm=False):
        out = [None] * len(requests)
        for i in sorted(range(len(requests)), key=lambda i: -len(requests[i].args[0])):
            ctx, kwargs = requests[i].args
            text = self.tok_decode([ord(c) for c in f"<think>{ctx}</think> {len(ctx)}"])
            self.cache_hook.add_partial("generate_until", (ctx, kwargs), text)
            out[i] = text
        return out

    monkeypatch.setattr(HFLM, "generate_until", generate_until)
    monkeypatch.setattr(HFLM, "tok_decode", lambda self, tokens, skip_special_tokens=True: "".join(map(chr, tokens)))
    seen = []

    class Hook:
        def add_partial(self, attr, req, res):
            seen.append(req[0])

    lm = object.__new__(thinking_hflm())
    lm.think_end_token, lm.cache_hook = "</think>", Hook()
    contexts = ["a", "ccc", "bb", "ccc", "dddd"]
    requests = [
        Instance("generate_until", {}, (c, {}), idx=0, metadata=("t", doc, 1)) for doc, c in enumerate(contexts)
    ]
    lm.generate_until(requests)
    assert seen == ["dddd", "ccc", "ccc", "bb", "a"] and isinstance(lm.cache_hook, Hook)  # forwarded, restored
    rows = [json.loads(line) for line in generations_jsonl(lm).splitlines()]
    assert [(r["doc_id"], r["text"]) for r in rows] == [
        (doc, f"<think>{c}</think> {len(c)}") for doc, c in enumerate(contexts)
    ]
    lm.doc_ids = lm.doc_ids[:-1]  # a generation not paired: kept in generation order, without ids
    assert [json.loads(line) for line in generations_jsonl(lm).splitlines()][0] == {
        "text": "<think>dddd</think> 4",
        "thinking_unclosed": False,
    }


def test_a_models_system_instruction_reaches_its_prompts_only(tmp_path, student_dir):
    """eval.system_instruction_by_model: the teacher is scored as the cache asked it to answer
    (told to reason, say) while other models get the question alone; recorded with the scores."""
    recipe = tiny_recipe(
        tmp_path,
        student_dir,
        models=["base", "student"],
        system_instruction_by_model={"base": "Solve it step by step."},
        limit=2,
    )
    recipe.train.output_dir = student_dir  # "student" is the same tiny model, without the instruction
    evaluate(recipe)
    for label, expected in (("base", "Solve it step by step."), ("student", None)):
        folder = tmp_path / "run" / "eval" / label
        info = json.loads((folder / "dante_gsm8k_local.json").read_text())
        assert info["system_instruction"] == expected
        prompts = [json.dumps(json.loads(line)["arguments"]) for line in (folder / "samples_gsm8k_local.jsonl").open()]
        assert all(("Solve it step by step." in p) == (expected is not None) for p in prompts)


def test_a_generation_whose_thinking_never_ended_is_scored_as_no_answer_and_kept(monkeypatch):
    """The rule (docs/eval.md): with eval.think_end_token set, a generation that opened a thinking
    block (itself, or through its template's prompt) and never closed it reaches lm-eval's scoring
    as an empty response, and is kept as written with its mark; one with no thinking is scored as
    it is."""
    from lm_eval.models.huggingface import HFLM

    from dante.eval.run import thinking_hflm, thinking_never_ended

    assert thinking_never_ended("<think>\n2 + 3 is", "</think>", False)
    assert thinking_never_ended("2 + 3 is", "</think>", True)  # the template opened the block
    assert not thinking_never_ended("2 + 3 is 5", "</think>", False)  # no thinking: an answer
    assert not thinking_never_ended("<think>5</think> 5", "</think>", True)
    assert not thinking_never_ended("<think>5", 151668, False)  # an id: lm-eval cut by token
    cls = thinking_hflm()
    lm = object.__new__(cls)
    lm.think_end_token, lm.prompt_opened, lm._keeping, lm.raw_generations = "</think>", True, True, []
    texts = iter(["2 + 3 is", "5</think> The answer is 5."])
    monkeypatch.setattr(HFLM, "tok_decode", lambda self, tokens, skip_special_tokens=True: next(texts))
    assert lm.tok_decode([1, 2]) == "" and lm.tok_decode([3]) == "5</think> The answer is 5."
    assert lm.raw_generations == [("2 + 3 is", True), ("5</think> The answer is 5.", False)]


def test_refilling_schedule_gives_lm_evals_greedy_answers(tmp_path, student_dir, monkeypatch):
    """eval.schedule refill (the default) and lm-eval's own batches score the same generations:
    the task's requests go to the model in one call and decode two rows at a time (checked), each
    row cut where lm-eval cuts it; sampling keeps lm-eval's batches."""
    from dante.teacher import refill

    calls: list[int] = []
    original = refill.refill_greedy

    def counting(model, prompts, **kw):
        calls.append(len(prompts))
        assert kw["slots"] == 2
        yield from original(model, prompts, **kw)

    monkeypatch.setattr(refill, "refill_greedy", counting)
    responses = {}
    for schedule in ("batch", "refill"):
        recipe = tiny_recipe(tmp_path / schedule, student_dir, schedule=schedule, limit=6, batch_size=2)
        evaluate(recipe)
        lines = (tmp_path / schedule / "run" / "eval" / "base" / "samples_gsm8k_local.jsonl").read_text().splitlines()
        responses[schedule] = sorted((json.loads(x)["doc_id"], json.loads(x)["resps"][0][0]) for x in lines)
    assert calls == [6]  # one call, the batch schedule never
    assert responses["refill"] == responses["batch"] and len(responses["batch"]) == 12  # two filters


def test_stop_strings_end_a_row_only_after_its_thinking():
    from dante.eval.run import StopAfterThinking, greedy_requests

    class Tok:
        def decode(self, ids):
            return "".join(chr(i) for i in ids)

    def ids(text):
        return [ord(c) for c in text]

    stop = StopAfterThinking(Tok(), ["\n\n"], "</think>", prompt_opened=False)
    assert not stop(0, ids("<think>a\n\nb"))  # inside an open thinking block: not yet
    assert not stop(1, ids("<think>a\n\nb</think>7"))
    assert stop(2, ids("<think>a\n\nb</think>7\n\n"))
    assert stop(3, ids("7\n\n"))  # no thinking at all
    opened = StopAfterThinking(Tok(), ["\n\n"], "</think>", prompt_opened=True)
    assert not opened(0, ids("a\n\nb")) and opened(1, ids("a\n\nb</think>7\n\n"))
    plain = StopAfterThinking(Tok(), ["\n\n"], None, prompt_opened=False)
    assert plain(0, ids("<think>a\n\n"))

    class Req:
        def __init__(self, kwargs):
            self.args = ("q", kwargs)

    assert greedy_requests([Req({"until": ["\n"], "do_sample": False, "temperature": 0.0, "max_gen_toks": 5})])
    assert not greedy_requests([Req({"do_sample": True, "temperature": 0.7})])
    assert not greedy_requests([Req({"until": ["\n"], "top_p": 0.9})])


def test_stop_check_streams_a_fast_tokenizers_text_token_by_token(tmp_path, monkeypatch):
    """With a fast tokenizer the stop check reads each row's text one token at a time (never the
    whole row again), and stops every row on the same token as decoding the whole row would,
    rows interleaved as the schedule calls them, characters split across tokens included."""
    from tests.tiny import make_tokenizer

    from dante.eval.run import StopAfterThinking

    tok = make_tokenizer(tmp_path / "tok")
    texts = [
        "<think>1 + 2 = 3\n\nthen 3 + 4 = 7</think>\n\nThe answer is 7.\n\nQuestion: more",
        "<think>é ü 数 🙂\n\n</think> 数学 🙂 done\n\nnext",
        "no thinking here, only an answer\n\nand more",
        "<think>never closed\n\n and on",
    ]
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert any("\ufffd" in tok.decode([i]) for i in rows[1])  # a character split across tokens

    def first_stop(check, decode_calls):
        ends, n = {}, 0
        while len(ends) < len(rows):  # one token to every live row per step, as refill_greedy does
            n += 1
            for index, ids in enumerate(rows):
                if index not in ends and n <= len(ids) and check(index, ids[:n]):
                    ends[index] = n
                elif index not in ends and n > len(ids):
                    ends[index] = None
        return ends

    whole = StopAfterThinking(tok, ["\n\n"], "</think>", prompt_opened=False)
    whole._backend = None  # the whole-row decode, as before
    want = first_stop(whole, None)
    assert want[3] is None and all(want[i] is not None for i in range(3))

    import tokenizers.decoders

    steps = []

    class Counted:  # the library's stream, each token it reads counted
        def __init__(self, **kw):
            self.inner = Stream(**kw)

        def step(self, backend, token):
            steps.append(token)
            return self.inner.step(backend, token)

    Stream = tokenizers.decoders.DecodeStream
    monkeypatch.setattr(tokenizers.decoders, "DecodeStream", Counted)
    streamed = StopAfterThinking(tok, ["\n\n"], "</think>", prompt_opened=False)
    calls = []
    decode = tok.decode
    tok.decode = lambda ids, **kw: calls.append(len(ids)) or decode(ids, **kw)
    try:
        got = first_stop(streamed, calls)
    finally:
        tok.decode = decode
    assert got == want
    assert calls == []  # never a whole-row decode
    assert len(steps) == sum(n if n is not None else len(rows[i]) for i, n in want.items())  # each token once
    assert [streamed.text(9 + i, ids) for i, ids in enumerate(rows)] == [decode(ids) for ids in rows]
