"""`dante prompts build` end to end on files written by the test: a three-source mixture with
planted exact and near duplicates and planted GSM8K/chain_sum/file contaminants; the manifest's
counts add up, every removal is named, the Parquet set round-trips and the cache reads it."""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))

import reasoning_gym  # noqa: E402, F401  (make install has the procedural extra: a broken import fails)

from dante.benchmarks import local_module
from dante.config import load_recipe
from dante.errors import ConfigError, DanteError
from dante.layout import PROMPT_SET, PROMPTS_MANIFEST
from dante.prompts import build_prompt_set, prompt_set, read_prompt_set

BENCH_QUESTION = "Which planet of the solar system has the largest number of known moons orbiting it as of this year?"


def _sentence(rng: random.Random, n: int = 30) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


WORDS = [f"tok{i}" for i in range(4000)]


def gsm_rows():
    return local_module("gsm8k_local/gsm8k_utils.py").read_rows()


def write_sources(tmp: Path) -> dict:
    """web.jsonl (200 distinct + planted copies), code.csv (100 distinct + one copy of a web prompt)."""
    rng = random.Random(0)
    web = [_sentence(rng) for _ in range(200)]
    planted = {"exact": [], "near": [], "contaminated": {}}
    rows = [{"prompt": p} for p in web]
    for k in range(10):  # exact copies: case and spacing changed
        rows.append({"prompt": "  " + web[k].upper().replace(" ", "   ") + " "})
        planted["exact"].append(len(rows) - 1)
    for k in range(10, 20):  # near copies: the last of 30 words replaced (5-shingle Jaccard 25/27)
        words = web[k].split()
        words[29] = "replaced"
        rows.append({"prompt": " ".join(words)})
        planted["near"].append(len(rows) - 1)
    gsm = gsm_rows()
    for row in (700, 900, 1200):  # held-out GSM8K rows, 13+ words copied with edits around them
        rows.append({"prompt": f"Homework help!! {gsm[row]['question'][:-1].upper()}, thanks a lot"})
        planted["contaminated"][len(rows) - 1] = ("gsm8k_local_heldout", str(row))
    rows.append({"prompt": f"Solve: {gsm[100]['question']}"})  # row 100 is not in the held-out task
    planted["gsm_row_100"] = len(rows) - 1
    rows.append({"prompt": f"Quick quiz. {BENCH_QUESTION} Answer briefly."})
    planted["contaminated"][len(rows) - 1] = ("bench.jsonl", "1")
    (tmp / "web.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with open(tmp / "code.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["text"])
        w.writeheader()
        for _ in range(100):
            w.writerow({"text": _sentence(rng, 25)})
        w.writerow({"text": web[50]})  # a cross-source exact duplicate
    (tmp / "bench.jsonl").write_text(json.dumps({"question": BENCH_QUESTION, "answer": "Saturn"}) + "\n")
    return planted


def recipe(tmp: Path, **prompts):
    data = {
        "name": "curation",
        "output_dir": str(tmp / "run"),
        "prompts": {
            "sources": [
                {"source": str(tmp / "web.jsonl"), "weight": 2, "license": "cc-by-4.0"},
                {"source": str(tmp / "code.csv"), "prompt_field": "text", "weight": 1},
                {
                    "source": "reasoning_gym:chain_sum",
                    "task_settings": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2},
                    "split": "test",  # the evaluated split: every one of these is a contaminant
                    "limit": 40,
                    "weight": 1,
                },
            ],
            "dedup": {"exact": True, "near": True},
            "decontaminate": {
                "tasks": ["gsm8k_local_heldout", "rg_chain_sum_2x2"],
                "files": [str(tmp / "bench.jsonl")],
            },
            **prompts,
        },
    }
    return load_recipe(data=data)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("curation")
    planted = write_sources(tmp)
    r = recipe(tmp, decontaminate={"tasks": ["gsm8k_local_heldout"], "files": [str(tmp / "bench.jsonl")]})
    return tmp, planted, r, build_prompt_set(r)


def test_planted_duplicates_are_removed_and_distinct_prompts_kept(built):
    tmp, planted, r, result = built
    m = result.manifest
    web = [x for x in m["removed"] if x["source"] == str(tmp / "web.jsonl")]
    exact = {x["row"] for x in web if x["step"] == "exact_dedup"}
    near = {x["row"] for x in web if x["step"] == "near_dedup"}
    assert exact == set(planted["exact"])
    assert near == set(planted["near"])
    assert all(x["similarity"] == pytest.approx(25 / 27, abs=1e-4) for x in m["removed"] if x["step"] == "near_dedup")
    code = [x for x in m["removed"] if x["source"] == str(tmp / "code.csv")]
    assert [(x["row"], x["step"]) for x in code] == [(100, "exact_dedup")]  # the copy of web row 50
    web_ids = {p.row: p.id for p in result.prompts if p.source == str(tmp / "web.jsonl")}
    assert code[0]["duplicate_of"] not in {p.id for p in result.prompts if p.source.endswith("code.csv")}
    assert m["sources"][0]["exact_dedup"] == 10 and m["sources"][1]["exact_dedup"] == 1
    # false-positive check: none of the 200 + 100 distinct prompts went (apart from sampling)
    assert not {x["row"] for x in web} & set(range(200))
    assert web_ids  # the web source is in the set


def test_planted_contaminants_are_removed_with_task_and_document(built):
    tmp, planted, r, result = built
    found = {x["row"]: (x["task"], x["doc_id"]) for x in result.manifest["removed"] if x["step"] == "decontaminate"}
    want = {
        row: (str(tmp / task) if task.endswith(".jsonl") else task, doc)
        for row, (task, doc) in planted["contaminated"].items()
    }
    web_found = {row: v for row, v in found.items() if row in want or row == planted["gsm_row_100"]}
    assert web_found == want  # GSM8K row 100 is not in the held-out task: kept
    dc = result.manifest["decontamination"]
    assert dc["checked"]["gsm8k_local_heldout"]["documents"] == 719
    assert dc["checked"]["gsm8k_local_heldout"]["removed"] == 3
    assert dc["checked"][str(tmp / "bench.jsonl")]["kind"] == "file"


def test_counts_add_up_and_the_mixture_keeps_the_weights(built):
    tmp, planted, r, result = built
    m = result.manifest
    flow = m["steps"]
    assert flow[0] == {"step": "read", "out": m["read"]}
    for before, after in zip(flow, flow[1:]):
        assert after["in"] == before["out"] and after["out"] == after["in"] - after["removed"]
    assert flow[-1]["out"] == m["prompts"] == len(result.prompts)
    for s in m["sources"]:
        assert s["read"] - s["exact_dedup"] - s["near_dedup"] - s["decontaminate"] == s["available"]
        assert s["available"] - s["not_sampled"] == s["selected"]
    assert len(m["removed"]) == sum(s["exact_dedup"] + s["near_dedup"] + s["decontaminate"] for s in m["sources"])
    selected = [s["selected"] for s in m["sources"]]
    # 2:1:1 of the most the sources allow (chain_sum test prompts are not decontaminated here: 40 left)
    assert selected == [80, 40, 40]
    by_source = [sum(1 for p in result.prompts if p.source == s["source"]) for s in m["sources"]]
    assert by_source == selected


def test_chain_sum_test_prompts_are_all_contaminants_of_the_test_task(tmp_path):
    write_sources(tmp_path)
    r = recipe(tmp_path)
    with pytest.raises(DanteError, match=r"prompts.sources\[2\].weight"):  # nothing left to keep 2:1:1
        build_prompt_set(r)
    assert not r.prompts_dir.exists()  # nothing written
    r = recipe(tmp_path, size=100)
    r.prompts.sources[2].weight = 0.0
    m = build_prompt_set(r, write=False).manifest
    assert m["sources"][2]["decontaminate"] == 40
    assert {x["task"] for x in m["removed"] if x["source"].startswith("reasoning_gym")} == {"rg_chain_sum_2x2"}


def test_parquet_round_trip_with_source_and_row(built):
    tmp, planted, r, result = built
    again = read_prompt_set(r.prompts_dir)
    assert again is not None and again.prompts == result.prompts
    assert all(p.source and p.location for p in again.prompts)
    import pyarrow.parquet as pq

    table = pq.read_table(r.prompts_dir / PROMPT_SET)
    assert table.column_names == ["id", "prompt", "system", "messages", "source", "row", "location", "source_index"]
    assert len(set(table.column("id").to_pylist())) == table.num_rows


def test_prompt_set_reads_the_built_set_and_rebuilds_a_stale_or_torn_one(built, tmp_path):
    tmp, planted, r, result = built
    stamp = (r.prompts_dir / PROMPT_SET).stat().st_mtime_ns
    assert [p.id for p in prompt_set(r)] == [p.id for p in result.prompts]
    assert (r.prompts_dir / PROMPT_SET).stat().st_mtime_ns == stamp  # read, not rebuilt
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / PROMPTS_MANIFEST).write_text((r.prompts_dir / PROMPTS_MANIFEST).read_text())
    (torn / PROMPT_SET).write_bytes((r.prompts_dir / PROMPT_SET).read_bytes()[:-10])
    assert read_prompt_set(torn) is None  # the manifest names another file: rebuilt, never half read
    web = tmp / "web.jsonl"
    web.write_text(web.read_text())  # touched: the same settings, a newer file
    stale = recipe(tmp, decontaminate=r.prompts.decontaminate.model_dump(), dir=str(tmp_path / "copy"))
    import shutil

    shutil.copytree(r.prompts_dir, tmp_path / "copy")
    assert [p.id for p in prompt_set(stale)] == [p.id for p in result.prompts]
    assert (tmp_path / "copy" / PROMPT_SET).stat().st_mtime_ns != stamp  # rebuilt: its input changed
    other = recipe(tmp, decontaminate=r.prompts.decontaminate.model_dump(), dir=str(tmp_path / "other"), seed=7)
    assert [p.id for p in prompt_set(other)] != [p.id for p in result.prompts]  # another seed, another sample
    assert read_prompt_set(tmp_path / "other") is not None


def test_the_cache_is_built_from_the_curated_set(built, tmp_path):
    from rel_support import EchoTeacher

    from dante.cache.records import read_cache
    from dante.cache.run import run_cache

    tmp, planted, r, result = built
    r.teacher.model = "echo"
    r.cache.dir = tmp_path / "cache"
    run_cache(r, teacher=EchoTeacher(r.teacher))
    assert sorted(rec.id for rec in read_cache(tmp_path / "cache")) == sorted(p.id for p in result.prompts)


def test_bad_input_is_located_and_writes_nothing(built, tmp_path):
    tmp, planted, r, result = built
    before = {f: (r.prompts_dir / f).read_bytes() for f in (PROMPT_SET, PROMPTS_MANIFEST)}
    bad = r.model_copy(deep=True)
    bad.prompts.decontaminate.tasks = ["no_such_task_xyz"]
    with pytest.raises(DanteError, match="unknown evaluation task"):
        build_prompt_set(bad)
    missing = r.model_copy(deep=True)
    missing.prompts.sources[1].source = str(tmp / "missing.csv")
    with pytest.raises(DanteError, match="does not exist"):
        build_prompt_set(missing)
    assert {f: (r.prompts_dir / f).read_bytes() for f in before} == before  # the built set is untouched
    for prompts, message in (
        ({"sources": [{"source": "a.jsonl", "weight": -1}]}, "greater than or equal to 0"),
        ({"sources": [{"source": "a.jsonl", "weight": 0}, {"source": "b.jsonl", "weight": 0}]}, "all zero"),
        ({"sources": [{"source": "a.jsonl", "weight": 1}, {"source": "b.jsonl"}]}, "every source a weight"),
        ({"source": "a.jsonl", "dedup": {"near": True, "threshold": 0}}, "greater than 0"),
        ({"source": "a.jsonl", "dedup": {"near": True, "threshold": 1.5}}, "less than or equal to 1"),
        ({"source": "a.jsonl", "sources": [{"source": "b.jsonl"}]}, "not both"),
    ):
        with pytest.raises(ConfigError, match=message) as err:
            load_recipe(data={"output_dir": str(tmp_path / "bad"), "prompts": prompts})
        assert "prompts" in err.value.render()
    assert not (tmp_path / "bad").exists()
