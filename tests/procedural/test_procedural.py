"""Procedural tasks (reasoning-gym): splits that never meet, the generator's scorer on known
answers, the prompt source (questions only, never answers) and the lm-eval task's data."""

from __future__ import annotations

import json

import pytest
import reasoning_gym  # noqa: E402, F401  (the procedural extra, which make install installs: a broken import fails)

from dante.config import PromptsConfig  # noqa: E402
from dante.errors import ConfigError, DataError  # noqa: E402
from dante.procedural import generate, score, split_of  # noqa: E402
from dante.prompts import load_prompts  # noqa: E402

SMALL = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}


def test_no_question_is_in_two_splits_whatever_the_seeds():
    splits = {
        "train": generate("chain_sum", "train", 400, seed=0, settings=SMALL),
        "validation": generate("chain_sum", "validation", 100, seed=1, settings=SMALL),
        "test": generate("chain_sum", "test", 100, seed=0, settings=SMALL),  # the train seed: still disjoint
    }
    questions = {name: {item.question for item in items} for name, items in splits.items()}
    for name, items in splits.items():
        assert len(questions[name]) == len(items)  # distinct within a split
        assert all(split_of("chain_sum", item.question) == name for item in items)
    assert not questions["train"] & questions["validation"]
    assert not questions["train"] & questions["test"]
    assert not questions["validation"] & questions["test"]
    # the small question space is what makes this matter: two train seeds do share questions
    other_seed = {item.question for item in generate("chain_sum", "train", 400, seed=7, settings=SMALL)}
    assert questions["train"] & other_seed


def test_generation_is_deterministic_and_items_are_what_the_generator_made():
    a = generate("chain_sum", "test", 20, seed=3, settings=SMALL)
    b = generate("chain_sum", "test", 20, seed=3, settings=SMALL)
    assert [(i.question, i.answer) for i in a] == [(i.question, i.answer) for i in b]
    assert [i.index for i in a] == list(range(20))
    for item in a:  # "State the final answer to the following arithmetic problem: 12 + 7 ="
        expression = item.question.rsplit(":", 1)[1].strip().rstrip("=").strip()
        assert int(item.answer) == eval(expression)  # noqa: S307 - two small integers and + / -


def test_the_scorer_on_known_answers():
    assert score("chain_sum", "12 + 7 = 19. The answer is 19.", "19") == 1.0
    assert score("chain_sum", "so the result is \\boxed{-4}", "-4") == 1.0
    assert score("chain_sum", "The answer is 1,000", "1000") == 1.0
    assert score("chain_sum", "The answer is 18", "19") == 0.0
    assert score("chain_sum", "I cannot tell.", "19") == 0.0  # no answer found
    assert score("chain_sum", "#### 5\n(5 apples)", "5") == 1.0  # '####' wins over the last number


def test_bad_task_settings_and_splits_are_config_errors():
    with pytest.raises(ConfigError, match="cannot make task"):
        generate("chain_sum", "train", 5, settings={"no_such_setting": 1})
    with pytest.raises(ConfigError, match="no_such_task"):
        generate("no_such_task", "train", 5)
    with pytest.raises(ConfigError, match="split"):
        generate("chain_sum", "dev", 5)
    with pytest.raises(ConfigError, match="distinct"):  # 1-digit sums of two terms: 100 questions in all
        generate("chain_sum", "test", 200, settings={**SMALL, "max_digits": 1})


def test_prompt_source_gives_questions_only_with_stable_ids():
    cfg = PromptsConfig(source="reasoning_gym:chain_sum", task_settings=SMALL, limit=12, seed=5)
    prompts = load_prompts(cfg)
    items = generate("chain_sum", "train", 12, seed=5, settings=SMALL)
    assert [p.prompt for p in prompts] == [i.question for i in items]
    assert all(p.source == "reasoning_gym:chain_sum:train" for p in prompts)
    assert [p.id for p in load_prompts(cfg)] == [p.id for p in prompts]
    assert len({p.id for p in prompts}) == 12
    for p, item in zip(prompts, items, strict=True):  # the gold answer is never part of what the teacher reads
        assert not p.prompt.rstrip().endswith(item.answer)
    with pytest.raises(DataError, match="unlimited"):
        load_prompts(PromptsConfig(source="reasoning_gym:chain_sum"))


def test_lm_eval_task_data_and_scoring():
    from dante.benchmarks import local_module

    utils = local_module("reasoning_gym_local/rg_utils.py")
    docs = utils.load_split("chain_sum", "test", 8, seed=0, settings=SMALL)["test"]
    assert len(docs) == 8 and all(split_of("chain_sum", d["question"]) == "test" for d in docs)
    doc = docs[0]
    assert doc["question"] == generate("chain_sum", "test", 1, settings=SMALL)[0].question
    right = utils.process_results(doc, [f"The answer is {doc['answer']}."])
    wrong = utils.process_results(doc, [f"The answer is {int(doc['answer']) + 1}."])
    assert right == {"exact_match": 1.0, "score": 1.0} and wrong["exact_match"] == 0.0
    assert json.loads(doc["settings"]) == SMALL
