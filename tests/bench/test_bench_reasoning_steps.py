"""bench/reasoning_steps.py: each written step of the working checked by hand-computed cases."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from reasoning_steps import steps_of  # noqa: E402


def test_steps_of_checks_each_step_of_the_thinking_only():
    assert steps_of("<think>\n99 - 71 = 28\n28 - 48 = -20\n</think>\n\nThe answer is -20.") == [True, True]
    assert steps_of("<think>\n12 + 5 = 17\n17 - 20 = 3\n</think>\n\nThe answer is 3.") == [True, False]
    assert steps_of("The answer is 1 + 1 = 3.") == [False]  # no thinking block: the whole text is read
    assert steps_of("<think>\nadd them\n</think>\n\n1 + 1 = 2") == []  # after the thinking: not a step


def test_the_table_counts_each_operation_and_compare_pairs_questions(tmp_path):
    import json

    from reasoning_steps import compare, read, summary

    def kept(name, texts):
        folder = tmp_path / name
        folder.mkdir()
        rows = [{"doc_id": i, "text": t, "thinking_unclosed": False} for i, t in enumerate(texts)]
        (folder / "generations_t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return read(folder, "t")

    before = kept(
        "before",
        [
            "<think>\n1 + 2 = 3\n3 - 5 = -1\n</think>\n\nThe answer is -1.",  # step 2 wrong
            "<think>\n4 - 1 = 3\n3 + 3 = 6\n</think>\n\nThe answer is 6.",  # both right
            "The answer is 7.",  # no working
        ],
    )
    after = kept(
        "after",
        [
            "<think>\n1 + 2 = 3\n3 - 5 = -2\n</think>\n\nThe answer is -2.",  # corrected
            "<think>\n4 - 1 = 2\n2 + 3 = 5\n</think>\n\nThe answer is 5.",  # broken
            "<think>\n9 + 9 = 17\n17 + 1 = 18\n</think>\n\nThe answer is 18.",  # still wrong
        ],
    )
    s = summary(before)
    assert s["written"] == {0: 1, 2: 2} and (s["step1"], s["step2"], s["both"]) == (2 / 3, 1 / 3, 1 / 3)
    assert s["by_op"] == {"+": (1.0, 2), "-": (0.5, 2)}
    assert s["thinking_chars"] == (20 + 19) / 2  # the two with a thinking block, stripped: "1 + 2 = 3\n3 - 5 = -1"
    found = compare(before, after)
    assert {k: v["count"] for k, v in found.items()} == {
        "corrected": 1,
        "broken": 1,
        "still wrong": 1,
        "still right": 0,
    }
    assert found["corrected"]["example"]["after"].endswith("-2.")
    assert summary(after)["by_op"] == {"+": (0.75, 4), "-": (0.5, 2)}  # 9 + 9 = 17 the wrong one
