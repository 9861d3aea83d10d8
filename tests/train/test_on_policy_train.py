"""`train.on_policy` end to end on the tiny student and the tiny hf teacher (different tokenizers):
the student's samples are scored and trained on next to the cached records, the scores land in
their exactly-once cache (a second run pays no teacher compute), the manifest counts the
teacher's tokens, a run interrupted and resumed reaches the same losses and samples, two DDP
ranks equal one process, and the dense top-K term trains at the one-to-one positions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from train_helpers import interrupt_at_step, make_cache_lines, recipe_data, write_cache

from dante.config import load_recipe
from dante.errors import DanteError
from dante.train.loop import train
from dante.train.sources.on_policy import SCORES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def warm(tmp_path_factory, student_dir) -> Path:
    """A short SFT run on the tiny cache, as a user would warm-start (a random student writes no text)."""
    tmp = tmp_path_factory.mktemp("warm")
    cache = write_cache(tmp / "cache", make_cache_lines())
    return train(load_recipe(data=recipe_data(tmp / "sft", student_dir, cache, steps=30, lr=1e-2))).output_dir


def rows(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


# the on-policy terms' settings (train.loss.policy_gradient / dense_kl) among a test's keyword arguments
TERM_KEYS = {
    "kl_coef": ("policy_gradient", "kl_coef"),
    "score_end": ("policy_gradient", "score_end"),
    "baseline": ("policy_gradient", "baseline"),
    "discount": ("policy_gradient", "discount"),
    "mask_above": ("policy_gradient", "mask_above"),
    "dense_kl": ("dense_kl", "weight"),
    "top_k": ("dense_kl", "top_k"),
    "dense_direction": ("dense_kl", "direction"),
}


def recipe_dict(tmp_path, student_dir, cache, teacher_dir, folder="run", steps=3, **on_policy):
    data = recipe_data(tmp_path / folder, student_dir, cache, steps=steps, checkpoint_every=1)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"q{i}", "prompt": f"Question {i}: tell me about the fox."}) + "\n" for i in range(6))
    )
    data["prompts"] = {"source": str(prompts), "id_field": "id"}  # ids (and so the samples' seeds) fixed
    data["teacher"] = {"backend": "hf", "model": str(teacher_dir), "device": "cpu", "dtype": "float32"}
    data["train"]["on_policy"] = {
        "fraction": 0.5,
        "max_new_tokens": 6,
        "samples_per_prompt": 2,
        "temperature": 0.7,
        "top_p": 0.9,
        **{k: v for k, v in on_policy.items() if k not in TERM_KEYS},
    }
    for key, value in on_policy.items():
        if key in TERM_KEYS:
            term, field = TERM_KEYS[key]
            data["train"].setdefault("loss", {}).setdefault(term, {})[field] = value
    return data


def recipe(*args, **kwargs):
    return load_recipe(data=recipe_dict(*args, **kwargs))


def test_on_policy_trains_caches_scores_and_resumes_to_the_same_losses(
    tmp_path, student_dir, teacher_dir, tiny_cache, monkeypatch, warm
):
    r = recipe(tmp_path, student_dir, tiny_cache, teacher_dir, warm_start=str(warm))
    result = train(r)
    metrics = [x for x in rows(result.metrics_path) if "loss" in x]
    assert len(metrics) == 3 and sum(x["on_policy_samples"] for x in metrics) > 0
    assert all(x["on_policy_kl"] is None or x["on_policy_kl"] == x["on_policy_kl"] for x in metrics)
    manifest = json.loads(result.manifest_path.read_text())
    compute = manifest["teacher_compute"]
    assert compute["tokens_scored"] > 0 and compute["on_policy"]["scored"] + compute["on_policy"]["cache_hits"] > 0
    scores = [
        *(r.student_dir / SCORES).glob("*/rank-*/shard-*.jsonl"),
        *(r.student_dir / SCORES).glob("*/rank-*/.partial-*"),
    ]
    assert scores and sum(len(f.read_text().splitlines()) for f in scores) == compute["on_policy"]["scored"]

    # interrupted after step 2 (checkpoint at 2), resumed: the same samples and losses
    again = recipe(tmp_path, student_dir, tiny_cache, teacher_dir, folder="crash", warm_start=str(warm))
    undo = interrupt_at_step(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train(again)
    undo()
    resumed = train(again, resume=True)
    got = {x["step"]: x for x in rows(resumed.metrics_path) if "loss" in x}
    for x in metrics:
        assert got[x["step"]]["loss"] == pytest.approx(x["loss"], rel=1e-5)
        assert got[x["step"]]["on_policy_samples"] == x["on_policy_samples"]
        if x["on_policy_kl"] is not None:
            assert got[x["step"]]["on_policy_kl"] == pytest.approx(x["on_policy_kl"], rel=1e-5)


def test_a_warm_start_that_is_not_a_model_is_refused(tmp_path, student_dir, teacher_dir, tiny_cache):
    r = recipe(tmp_path, student_dir, tiny_cache, teacher_dir, warm_start=str(tmp_path))
    with pytest.raises(DanteError, match="not a model folder") as exc:
        train(r)
    assert exc.value.field == "train.on_policy.warm_start"


def test_two_ranks_equal_one_process(tmp_path, student_dir, teacher_dir, tiny_cache, warm):
    """DDP on CPU (gloo, 2 ranks through torchrun): each rank writes and scores its share of the
    prompts (per-sample seeds: the same samples), the normaliser counts every rank's tokens, and
    the loss, the on-policy KL and the samples equal one process's step for step."""
    kw = {"warm_start": str(warm), "dense_kl": 0.5, "top_k": 5, "score_end": True, "baseline": "mean"}
    kw |= {"discount": 0.5, "mask_above": 3.0}
    single = train(recipe(tmp_path, student_dir, tiny_cache, teacher_dir, folder="one", **kw))
    recipe_file = tmp_path / "two.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe_dict(tmp_path, student_dir, tiny_cache, teacher_dir, "two", **kw)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}
    done = subprocess.run(
        [*cmd, "-m", "dante.cli", "train", str(recipe_file)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one = [x for x in rows(single.metrics_path) if "loss" in x]
    two_dir = tmp_path / "two" / "run" / "student"
    two = [x for x in rows(two_dir / "metrics.jsonl") if "loss" in x]
    assert sum(x["on_policy_samples"] for x in one) > 0
    compute = [
        json.loads(p.read_text())["teacher_compute"] for p in (single.manifest_path, two_dir / "dante_manifest.json")
    ]
    assert compute[0]["tokens_scored"] == compute[1]["tokens_scored"] > 0  # both ranks' scoring counted
    for a, b in zip(one, two, strict=True):
        assert (a["on_policy_samples"], a["on_policy_tokens"]) == (b["on_policy_samples"], b["on_policy_tokens"])
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert (b["on_policy_kl"] is None) == (a["on_policy_kl"] is None)
        if a["on_policy_kl"] is not None:
            assert b["on_policy_kl"] == pytest.approx(a["on_policy_kl"], rel=1e-4, abs=1e-5)
            assert b["on_policy_baseline"] == pytest.approx(a["on_policy_baseline"], rel=1e-4, abs=1e-6)  # global
            assert b["on_policy_dense_kl"] == pytest.approx(a["on_policy_dense_kl"], rel=1e-4, abs=1e-6)
            assert b["on_policy_masked"] == pytest.approx(a["on_policy_masked"]) and 0.0 <= a["on_policy_masked"] <= 1.0


class _Written:
    """Stands in for the student seam: ``generate`` returns the given token ids."""

    def __init__(self, student, rows):
        self.student, self.rows = student, rows
        self.tokenizer = student.tokenizer

    def generate(self, model, prompt_ids, **kw):
        from dante.train.model.student import Written

        return [Written(ids, [-0.5] * len(ids)) for ids in self.rows[: len(prompt_ids)]]


class _Teacher:
    """Scores with a real teacher, or answers None (a text its tokenizer does not give back)."""

    def __init__(self, real=None):
        self.real, self.calls = real, 0

    def check_scoring(self, k=0, end=False):
        pass

    def score(self, prompts, texts, k=0, ended=None):
        self.calls += len(texts)
        return self.real.score(prompts, texts, k, ended) if self.real else [None] * len(texts)

    def close(self):
        pass


def test_bad_samples_are_counted_never_trained_on_or_scored_as_zero(tmp_path, student_dir, teacher_dir, tiny_cache):
    """An empty sample (the end of sequence first), one that is not UTF-8, one the teacher's
    tokenizer does not give back (None from the engine), and one whose last character
    max_new_tokens cut: counted by kind in the stats; only the text before the cut is scored."""
    from accelerate import Accelerator

    from dante.config import TeacherConfig
    from dante.teacher.hf import HFTeacher
    from dante.train.model.student import make_student
    from dante.train.sources.on_policy import OnPolicy

    r = recipe(tmp_path, student_dir, tiny_cache, teacher_dir, samples_per_prompt=1)
    student = make_student(r)
    model, _ = student.load(Accelerator(cpu=True))
    tok = student.tokenizer
    ok = tok("The fox is 3.", add_special_tokens=False)["input_ids"]
    euro = tok("€", add_special_tokens=False)["input_ids"]  # three bytes, byte-level tokens
    assert len(euro) > 1, "the tiny tokenizer should split a multi-byte character"
    rows = [[tok.eos_token_id], [euro[-1]] + ok, ok + euro[:-1], ok]
    real = HFTeacher(TeacherConfig(backend="hf", model=str(teacher_dir), device="cpu", dtype="float32"))
    op = OnPolicy(r, _Written(student, rows), Accelerator(cpu=True), teacher=_Teacher(real))
    got = op.samples(model, [op.prompts[0]] * 4, step=1)
    stats = op.stats
    assert (stats.samples, stats.skipped_empty, stats.skipped_not_text) == (4, 1, 1)
    assert [s.ids for s in got] == [ok, ok]  # the cut character dropped; the text before it kept
    assert stats.scored == 1 and op.teacher.calls == 1  # one text of one prompt: scored once
    op.student.rows = [ok]
    again = op.samples(model, [op.prompts[0]], step=2)
    assert again[0].score == got[0].score and stats.cache_hits == 1 and op.teacher.calls == 1
    assert all(s.log_ratio == pytest.approx(sum(s.score.logprobs) + 0.5 * len(ok)) for s in got)
    op.close()

    none = OnPolicy(r, _Written(student, [ok]), Accelerator(cpu=True), teacher=_Teacher())
    none.cache.scores.clear()
    assert none.samples(model, none.prompts[4:5], step=1) == []
    assert none.stats.skipped_not_round_trip == 1 and none.stats.scored == 0  # never a made-up score
    none.close()


def test_greedy_with_several_samples_per_prompt_is_refused(tmp_path, student_dir, teacher_dir, tiny_cache):
    with pytest.raises(Exception, match="temperature 0 \\(greedy\\) writes one completion per prompt"):
        recipe(tmp_path, student_dir, tiny_cache, teacher_dir, temperature=0.0, samples_per_prompt=2)
    with pytest.raises(Exception, match="the dense term needs the teacher's top-k"):
        recipe(tmp_path, student_dir, tiny_cache, teacher_dir, dense_kl=1.0)


def test_plan_says_what_the_student_will_write_and_the_teacher_score(tmp_path, student_dir, teacher_dir, tiny_cache):
    from rich.console import Console

    from dante.plan import render_plan

    r = recipe(tmp_path, student_dir, tiny_cache, teacher_dir, steps=5)  # batch 4, λ 0.5: 2 prompts × 2 samples
    console = Console(width=200, record=True)
    console.print(render_plan(r))
    text = console.export_text()
    assert "λ = 0.5: 2 prompts × 2 samples a step written by the student (20 in all, ≤ 6 tokens each)" in text
    assert "≤ 120 teacher tokens" in text


def test_sharded_weights_are_refused_by_name():
    from types import SimpleNamespace

    from dante.train.sources.on_policy import check_unsharded

    plain = SimpleNamespace(distributed_type="MULTI_CPU", state=SimpleNamespace(deepspeed_plugin=None))
    check_unsharded(plain)
    for acc in (
        SimpleNamespace(distributed_type="DistributedType.FSDP", state=SimpleNamespace(deepspeed_plugin=None)),
        SimpleNamespace(
            distributed_type="DEEPSPEED",
            state=SimpleNamespace(
                deepspeed_plugin=SimpleNamespace(deepspeed_config={"zero_optimization": {"stage": 3}})
            ),
        ),
    ):
        with pytest.raises(DanteError, match="FSDP and ZeRO-3 shard") as exc:
            check_unsharded(acc)
        assert exc.value.field == "train.on_policy.fraction"


def test_the_dense_term_alone_trains_and_nothing_to_train_is_refused(
    tmp_path, student_dir, teacher_dir, tiny_cache, warm
):
    """kl_coef 0 with dense_kl > 0: GKD's reverse KL on the student's samples alone (the policy
    gradient's weights are 0, the dense KL is what moves the student); both 0 is an error."""
    r = recipe(tmp_path, student_dir, tiny_cache, teacher_dir, warm_start=str(warm), kl_coef=0.0, dense_kl=1.0, top_k=5)
    rows_ = [x for x in rows(train(r).metrics_path) if "loss" in x]
    assert any(x["on_policy_dense_kl"] for x in rows_) and all(x["grad_norm"] > 0 for x in rows_)
    with pytest.raises(Exception, match="kl_coef 0 leaves nothing to train"):
        recipe(tmp_path, student_dir, tiny_cache, teacher_dir, kl_coef=0.0)


def test_the_end_of_turn_is_scored_only_after_a_sample_the_student_ended(
    tmp_path, student_dir, teacher_dir, tiny_cache
):
    """score_end: a sample ending in the student's end of sequence gets the teacher's end-of-turn
    logprob (its own score-cache entry: the same text cut by max_new_tokens is another key);
    one cut by the length cap gets none. The probe asks the engine for the end first."""
    import math

    from accelerate import Accelerator

    from dante.config import TeacherConfig
    from dante.teacher.hf import HFTeacher
    from dante.train.model.student import make_student
    from dante.train.sources.on_policy import OnPolicy, ScoreCache

    r = recipe(tmp_path, student_dir, tiny_cache, teacher_dir, samples_per_prompt=1, score_end=True)
    student = make_student(r)
    model, _ = student.load(Accelerator(cpu=True))
    tok = student.tokenizer
    ok = tok("The fox is 3.", add_special_tokens=False)["input_ids"]
    real = HFTeacher(TeacherConfig(backend="hf", model=str(teacher_dir), device="cpu", dtype="float32"))
    op = OnPolicy(r, _Written(student, [ok + [tok.eos_token_id], ok]), Accelerator(cpu=True), teacher=_Teacher(real))
    ended, cut = op.samples(model, [op.prompts[0]] * 2, step=1)
    assert ended.ids == ok + [tok.eos_token_id] and cut.ids == ok
    assert ended.end_logprob is not None and math.isfinite(ended.end_logprob) and ended.end_logprob <= 0
    assert cut.end_logprob is None and cut.end_log_ratio is None
    assert ended.score == cut.score  # the text's own tokens score the same; the end is kept apart
    assert ended.advantages(r.train.loss.policy_gradient)[-1] == pytest.approx(
        ended.end_logprob + 0.5
    )  # the fake writer's log p_S = -0.5
    assert op.stats.scored == 2 and op.teacher.calls == 2  # two keys: the text with its end, the text alone
    text = "The fox is 3."
    assert ScoreCache.key(op.prompts[0], text, end=True) != ScoreCache.key(op.prompts[0], text)
    op.close()


def test_on_policy_alone_draws_from_one_source_and_logs_its_terms(tmp_path, student_dir, teacher_dir, tiny_cache):
    """fraction 1: every prompt of a step is the student's, no cached record is drawn (only the
    on-policy source), and the row logs that source's terms and no records' ones."""
    from dante.train.metrics import format_info

    result = train(recipe(tmp_path, student_dir, tiny_cache, teacher_dir, steps=2, fraction=1.0))
    metrics = [x for x in rows(result.metrics_path) if "loss" in x]
    assert len(metrics) == 2 and all("cwce" not in x and x["records"] == 0 for x in metrics)
    for x in metrics:  # the step's loss: the one source's, at share 1, and TEA once
        assert x["loss"] == pytest.approx(x["on_policy_loss"] + x["lambda_tea"] * x["tea"], rel=1e-12)
    assert "cwce" not in format_info(metrics[-1]) and format_info(metrics[-1]).startswith("loss ")


@pytest.mark.parametrize("name", ["on-policy-demo.yaml", "reasoning-on-policy.yaml"])
def test_the_on_policy_example_recipes_plan_and_train_at_a_tiny_size(tmp_path, student_dir, teacher_dir, warm, name):
    """configs/on-policy-demo.yaml (SFT start, then the dense term, as BENCHMARKS 6f measured it)
    and configs/reasoning-on-policy.yaml (the chunk policy gradient with the end scored and a mean
    baseline, plus the dense term: BENCHMARKS 18) are planned by `dante plan` and train, with the
    tiny student and teacher in place of the real ones and their sizes cut down."""
    from pathlib import Path

    from rich.console import Console

    from dante.plan import render_plan

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Question {i}: what is {i} + 3?"}) + "\n" for i in range(4)))
    config = Path(__file__).resolve().parents[2] / "configs" / name
    r = load_recipe(
        config,
        [
            f"output_dir={tmp_path / 'run'}",
            f"teacher.model={teacher_dir}",
            "teacher.dtype=float32",
            f"student.model={student_dir}",
            f"train.on_policy.warm_start={warm}",
            f"prompts.source={prompts}",
            "prompts.decontaminate.tasks=[]",
            "prompts.task_settings={}",
            f"cache.dir={tmp_path / 'no-cache'}",
            "train.steps=2",
            "train.batch_sequences=2",
            "train.micro_batch_size=2",
            "train.on_policy.max_new_tokens=6",
            "train.loss.dense_kl.top_k=5",
        ],
    )
    console = Console(width=200, record=True)
    console.print(render_plan(r))
    plan = console.export_text()
    assert "λ = 1: 2 prompts × 1 samples a step written by the student (4 in all" in plan
    result = train(r)
    metrics = [x for x in rows(result.metrics_path) if "loss" in x]
    assert len(metrics) == 2 and all(x["on_policy_dense_kl"] is not None for x in metrics)
    if name == "reasoning-on-policy.yaml":  # the chunk policy gradient with the end of turn scored, too
        assert "each ended sample's end of turn" in plan and r.train.loss.policy_gradient.baseline == "mean"
        # the tiny random student's samples are sometimes all dropped; each step with one has its PG term
        assert all((x["on_policy_samples"] > 0) == (x["on_policy_kl"] is not None) for x in metrics)
