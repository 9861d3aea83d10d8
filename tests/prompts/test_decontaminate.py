"""Decontamination: planted 13-gram copies (with edits around them) are found and named, texts
that share less are kept, short documents match whole, and hash collisions never remove."""

import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dante.errors import DataError
from dante.prompts import decontaminate
from dante.prompts.decontaminate import Document, NgramIndex, file_documents, task_documents

QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
DOCS = [
    Document("gsm", "0", "question", QUESTION),
    Document("gsm", "0", "answer", "Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips altogether."),
    Document("arith", "a1", "question", "State the final answer to the following arithmetic problem: 57 + 8 ="),
    Document("arith", "a1", "answer", "65"),
]


def test_planted_copy_with_edits_around_it_is_found_and_named():
    index = NgramIndex.build(DOCS)
    copy = "My homework: NATALIA sold clips to 48 of her friends in April, and then she sold... please help!!"
    found = index.find(["an unrelated prompt about cooking rice", copy])
    assert list(found) == [1]
    match = found[1]
    assert (match.task, match.doc_id, match.field) == ("gsm", "0", "question")
    assert match.ngram == "natalia sold clips to 48 of her friends in april and then she"


def test_twelve_shared_words_are_not_contamination():
    index = NgramIndex.build(DOCS)
    twelve = "natalia sold clips to 48 of her friends in april and then — a different story"
    assert index.find([twelve]) == {}


def test_answers_are_checked_too():
    index = NgramIndex.build(DOCS)
    found = index.find(["We know Natalia sold 48 / 2 = 24 clips in May. Natalia sold 48 + 24 = 72 clips, right?"])
    assert found[0].field == "answer"


def test_short_documents_match_whole_and_too_short_ones_are_counted():
    index = NgramIndex.build(DOCS)
    assert index.counts["arith"].too_short == 1  # the answer "65"
    assert index.counts["gsm"].too_short == 0 and index.counts["gsm"].documents == 1
    hit = index.find(["Please: state the final answer to the following arithmetic problem: 57 + 8 = ?"])
    assert hit[0].doc_id == "a1" and hit[0].ngram.endswith("57 + 8 =")
    other_operator = "State the final answer to the following arithmetic problem: 57 - 8 ="
    assert index.find([other_operator, "65", "the answer is 65"]) == {}


def test_windows_never_span_two_prompts_or_batches(monkeypatch):
    words = QUESTION.split()
    first, second = " ".join(words[:7]), " ".join(words[7:14])  # each half of a 13-gram
    index = NgramIndex.build(DOCS)
    assert index.find([first, second]) == {}
    monkeypatch.setattr(decontaminate, "BATCH_WORDS", 5)  # one prompt per batch
    texts = ["noise"] * 3 + [QUESTION] + ["noise"] * 3 + [QUESTION]
    assert sorted(index.find(texts)) == [3, 7]


def test_hash_collisions_are_confirmed_on_the_words(monkeypatch):
    monkeypatch.setattr(decontaminate, "_BASE", np.uint64(0))  # every window hashes to its last word
    index = NgramIndex.build(DOCS)
    assert index.find(["completely different words that end in altogether"]) == {}  # same last word
    assert 0 in index.find([QUESTION])


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_planted_window_is_found(data):
    rng = random.Random(data.draw(st.integers(0, 10_000)))
    vocab = [f"v{i}" for i in range(500)]
    docs = [Document("t", str(i), "question", " ".join(rng.choices(vocab, k=40))) for i in range(20)]
    index = NgramIndex.build(docs)
    doc = data.draw(st.integers(0, 19))
    start = data.draw(st.integers(0, 27))
    window = docs[doc].text.split()[start : start + 13]
    noise = lambda k: " ".join(f"n{rng.randrange(10**6)}" for _ in range(k))  # noqa: E731
    text = f"{noise(data.draw(st.integers(0, 20)))} {' '.join(window).upper()}, {noise(data.draw(st.integers(0, 20)))}"
    found = index.find(["clean prompt", text])
    assert list(found) == [1]
    assert found[1].ngram.split() in [d.text.split()[i : i + 13] for d in docs for i in range(28)]


def test_task_documents_of_local_tasks():
    docs = task_documents(["gsm8k_local_heldout", "humaneval_local"])
    gsm = [d for d in docs if d.task == "gsm8k_local_heldout"]
    assert len({d.doc_id for d in gsm}) == 719  # rows 600..1318
    assert {d.field for d in gsm} == {"question", "answer"}
    human = [d for d in docs if d.task == "humaneval_local" and d.field == "answer"]
    assert len(human) == 164 and "return" in human[0].text  # the canonical solution, not the tests
    assert human[0].doc_id == "HumanEval/0"


def test_unknown_task_is_a_located_error():
    with pytest.raises(DataError) as err:
        task_documents(["gsm8k_locall"])
    text = err.value.render()
    assert "prompts.decontaminate.tasks" in text and "gsm8k_local" in text  # the close match as a hint


def test_file_documents(tmp_path):
    f = tmp_path / "bench.jsonl"
    f.write_text(json.dumps({"q": QUESTION, "n": 3, "msgs": [{"role": "user", "content": "hi there"}]}) + "\n")
    docs = file_documents(str(f))
    assert [(d.doc_id, d.field) for d in docs] == [("1", "q"), ("1", "msgs")]
    with pytest.raises(DataError, match="does not exist"):
        file_documents(str(tmp_path / "missing.jsonl"))
