"""The tokenizer-pair audit (``dante tokenizers RECIPE``, dante.audit): on the recipe's cached
texts with the tiny teacher and student tokenizers, its figures agree with an alignment done by
hand, the same tokenizer on both sides is one to one everywhere, and the CLI writes its JSON."""

from __future__ import annotations

import json

import pytest
import yaml
from train_helpers import make_cache_lines, write_cache

import tiny
from dante.audit import PairStats, audit
from dante.config import load_recipe
from dante.tokens import TokenBytes
from dante.train.align import STUDENT_NOT_JOINING, align


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    return tiny.make_teacher_dir(root / "teacher"), tiny.make_student_dir(root / "student"), root


def _recipe(root, teacher, student, cache):
    data = {
        "name": "audit",
        "output_dir": str(root / "run"),
        "teacher": tiny.teacher_settings(teacher),
        "cache": {"dir": str(cache)},
        "student": {"model": str(student)},
    }
    path = root / f"recipe-{teacher.name}-{student.name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_audit_matches_an_alignment_by_hand(dirs):
    teacher, student, root = dirs
    rows = make_cache_lines(20)
    cache = write_cache(root / "cache", rows)
    report = audit(load_recipe(_recipe(root, teacher, student, cache)))
    from transformers import AutoTokenizer

    t_tok, s_tok = AutoTokenizer.from_pretrained(teacher), AutoTokenizer.from_pretrained(student)
    tb, sb = TokenBytes(t_tok), TokenBytes(s_tok)
    one, tokens = 0, 0
    for r in rows:
        text = r["teacher_text"]
        t = [tb(i) for i in t_tok(text, add_special_tokens=False)["input_ids"]]
        s = [sb(i) for i in s_tok(text, add_special_tokens=False)["input_ids"]]
        one += sum(c.one_to_one for c in align(t, s, text.encode()))
        tokens += len(s)
    a = report["alignment"]
    assert a["texts"] == a["aligned"] == 20 and a["unaligned"] == {}
    assert a["one_to_one_token_share"] == pytest.approx(one / tokens)
    assert 0 < a["one_to_one_token_share"] < 1  # the two tiny tokenizers differ
    assert report["texts_from"].startswith("cache") and not report["same_vocabulary"]
    assert report["teacher_can_score"].startswith("yes")
    assert report["student_side"]["splits"]["digits"]  # how it cuts "1234567 2026"
    assert any("on-policy" in line for line in report["recommendation"])
    assert any("chunk term" in line and "20 aligned texts" in line for line in report["recommendation"])


def test_one_tokenizer_on_both_sides_is_one_to_one_everywhere(dirs):
    teacher, _, root = dirs
    cache = write_cache(root / "cache-same", make_cache_lines(8))
    report = audit(load_recipe(_recipe(root, teacher, teacher, cache)))
    assert report["same_vocabulary"] and report["alignment"]["one_to_one_token_share"] == 1.0
    assert "same vocabulary" in report["recommendation"][0]
    assert not any("chunk term" in line for line in report["recommendation"])  # every chunk is one token


def test_texts_that_cannot_be_aligned_are_counted_by_reason():
    stats = PairStats()
    stats.add([b"ab"], [b"a", b"b"], b"ab")
    stats.add([b"ab"], [b"a", b"c"], b"ab")
    d = stats.as_dict()
    assert d["aligned"] == 1 and d["unaligned"] == {STUDENT_NOT_JOINING: 1}
    assert d["one_to_one_chunk_share"] == 0.0 and d["student_tokens_per_chunk"]["max"] == 2


def test_the_cli_prints_the_audit_and_writes_json(dirs, tmp_path):
    from typer.testing import CliRunner

    from dante.cli import app

    teacher, student, root = dirs
    cache = write_cache(root / "cache-cli", make_cache_lines(6))
    out = tmp_path / "audit.json"
    result = CliRunner().invoke(app, ["tokenizers", str(_recipe(root, teacher, student, cache)), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "one-to-one chunks" in result.output
    assert json.loads(out.read_text())["alignment"]["texts"] == 6
