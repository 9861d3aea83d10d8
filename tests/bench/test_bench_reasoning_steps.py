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
