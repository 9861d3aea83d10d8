"""`dante report RUN_DIR` from a run folder written by the test: files, images, model card, notes."""

import re
from pathlib import Path

import yaml
from fake_run import make_run, write_eval

from dante.report.build import build_report

PLOTS = ("scoreboard.png", "score_vs_compute.png", "training_curves.png", "cache_entropy.png")


def front_matter(text: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, "model card has no YAML front matter"
    return yaml.safe_load(match.group(1))


def test_report_writes_markdown_plots_and_model_card(tmp_path):
    from PIL import Image

    run = make_run(tmp_path / "run")
    path = build_report(run)
    out = run / "report"
    assert path == out / "report.md"
    for name in PLOTS:
        with Image.open(out / name) as img:
            img.verify()
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.size[0] > 400 and img.size[1] > 250
    text = path.read_text()
    for heading in (
        "## Scores measured in this run",
        "## Published reference figures (not measured here)",
        "## Compute",
        "## Training",
        "## Teacher cache",
        "## Plots",
        "## Consistency checks",
    ):
        assert heading in text
    for name in PLOTS:
        assert f"]({name})" in text
    assert "| GSM8K | 18.0" in text and "32.0" in text  # base and student, in percent
    # the first table answers the run's question: the student before and after, one row each
    first = text[text.index("## Scores measured in this run") :].split("\n\n")[3]
    assert text.index("### Before and after distillation") < text.index("### All models")
    assert first.splitlines()[0].startswith("| model | GSM8K | HumanEval")
    assert first.splitlines()[2].startswith("| student before | 18.0") and first.splitlines()[3].startswith(
        "| student after | 32.0"
    )
    assert "not recorded" in text  # the fake cache manifest has no device time


def test_model_card_yaml_holds_the_measured_student_scores(tmp_path):
    run = make_run(tmp_path / "run")
    build_report(run)
    card = (run / "report" / "README.md").read_text()
    meta = front_matter(card)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    (entry,) = meta["model-index"]
    assert entry["name"] == "fake-run"
    values = {r["dataset"]["type"]: (r["metrics"][0]["type"], r["metrics"][0]["value"]) for r in entry["results"]}
    assert values == {"gsm8k_local_heldout": ("exact_match", 32.0), "humaneval_local": ("pass@1", 10.0)}
    assert all(
        "lm-eval 0.4.13" in r["dataset"]["name"] and "8-shot" in r["dataset"]["name"]
        for r in entry["results"]
        if r["dataset"]["type"].startswith("gsm8k")
    )
    assert (run / "student" / "README.md").read_text() == card  # copied into the checkpoint folder


def test_model_card_in_student_folder_is_not_overwritten_when_user_written(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "student" / "README.md").write_text("# my own card\n")
    build_report(run)
    assert (run / "student" / "README.md").read_text() == "# my own card\n"


def test_report_of_a_run_with_no_stage_done_is_notes_not_a_crash(tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    text = build_report(run).read_text()
    assert "no evaluation yet" in text and "has not finished training" in text and "no sealed cache shards" in text
    assert "not drawn" in text
    assert not list((run / "report").glob("*.png"))
    meta = front_matter((run / "report" / "README.md").read_text())
    assert "model-index" not in meta


def test_report_before_eval_still_draws_training_and_cache(tmp_path):
    run = make_run(tmp_path / "run", scores=False)
    text = build_report(run).read_text()
    out = run / "report"
    assert (out / "training_curves.png").is_file() and (out / "cache_entropy.png").is_file()
    assert not (out / "scoreboard.png").exists() and "no evaluation yet" in text


def test_broken_files_are_noted_and_skipped(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "eval" / "teacher").mkdir()
    (run / "eval" / "teacher" / "scores.json").write_text("{not json")
    with open(run / "student" / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 61, "loss": 1.0')  # torn last line
    text = build_report(run).read_text()
    assert "teacher/scores.json" in text and "metrics.jsonl:62" in text
    assert (run / "report" / "training_curves.png").is_file()


def test_report_output_dir_and_no_reference(tmp_path):
    run = make_run(tmp_path / "run")
    recipe = yaml.safe_load((run / "resolved_recipe.yaml").read_text())
    recipe["report"] = {"include_card_reference": False, "title": "My run"}
    (run / "resolved_recipe.yaml").write_text(yaml.safe_dump(recipe))
    path = build_report(run, output_dir=tmp_path / "elsewhere")
    text = path.read_text()
    assert path.parent == tmp_path / "elsewhere" and text.startswith("# My run")
    assert "Published reference" not in text


def test_cli_report_command(tmp_path):
    from typer.testing import CliRunner

    from dante.cli import app

    run = make_run(tmp_path / "run")
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert Path(run / "report" / "report.md").is_file()
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 1


def test_eval_rows_of_another_model_appear_as_a_column(tmp_path):
    run = make_run(tmp_path / "run")
    write_eval(run / "eval", "teacher", "gsm8k_local_heldout", 0.61)
    text = build_report(run).read_text()
    header = next(line for line in text.splitlines() if line.startswith("| benchmark | base"))
    assert header == "| benchmark | base | student | teacher |"


def test_before_after_table_has_intervals_and_the_paired_mcnemar_test(tmp_path):
    import json

    run = make_run(tmp_path / "run")

    def samples(model: str, right: set[int]) -> None:
        lines = [
            json.dumps({"doc_id": i, "filter": "strict-match", "exact_match": float(i in right)}) for i in range(50)
        ] + [json.dumps({"doc_id": i, "filter": "flexible-extract", "exact_match": 1.0}) for i in range(50)]
        (run / "eval" / model / "samples_gsm8k_local_heldout.jsonl").write_text("\n".join(lines) + "\n")

    samples("base", set(range(9)))  # 18% of 50
    samples("student", set(range(4, 20)))  # 32%: right only after on 11 docs (9..19), only before on 4 (0..3)
    text = (build_report(run)).read_text()
    first = text[text.index("### Before and after distillation") :].split("\n\n")[2]
    lines = first.splitlines()
    assert lines[2].startswith("| student before | 18.0 [1] (9.8–30.8)")  # its Wilson interval, 9 of 50
    # p = 2 * (C(15,0) + ... + C(15,4)) / 2^15 = 2 * 1941 / 32768
    assert lines[-1].startswith("| after vs before | +14.0 points; 11 won / 4 lost of 50, McNemar p = 0.12")


def test_report_states_what_the_prompts_were_checked_against_and_flags_the_rest(tmp_path):
    import json

    run = make_run(tmp_path / "run")
    text = build_report(run).read_text()
    assert "One source (`unknown`), not curated" in text  # no curated set: every student score is flagged
    assert text.count("not checked against this task for contamination") == 2  # student GSM8K and HumanEval
    (run / "prompts").mkdir()
    manifest = {
        "prompts": 590,
        "read": 600,
        "sources": [
            {
                "index": 0,
                "source": "web.jsonl",
                "weight": None,
                "read": 600,
                "exact_dedup": 4,
                "near_dedup": 3,
                "decontaminate": 3,
                "not_sampled": 0,
                "selected": 590,
            }
        ],
        "decontamination": {
            "ngram": 13,
            "tasks": ["gsm8k_local_heldout"],
            "files": [],
            "checked": {
                "gsm8k_local_heldout": {"kind": "task", "documents": 719, "keys": 9000, "too_short": 0, "removed": 3}
            },
        },
    }
    (run / "prompts" / "prompts_manifest.json").write_text(json.dumps(manifest))
    text = build_report(run).read_text()
    section = text[text.index("## Prompt set") : text.index("## Teacher cache")]
    assert "590 prompts kept of 600 read" in section
    assert "| gsm8k_local_heldout | yes (719 documents) | 3 |" in section
    assert "| humaneval_local | **not checked** | — |" in section
    flagged = [line for line in text.splitlines() if "not checked against this task for contamination" in line]
    assert len(flagged) == 1 and "student / HumanEval" in flagged[0]  # base and teacher rows are never flagged


def test_report_gives_the_gap_recovered_and_what_it_cost_the_teacher(tmp_path):
    """GR = (after − before) / (teacher − before) per benchmark, and per million teacher tokens
    (generated for the cache + scored on the student's own samples, from the training manifest)."""
    import json

    from fake_run import write_eval

    run = make_run(tmp_path / "run")
    write_eval(run / "eval", "teacher", "gsm8k_local_heldout", 0.74)
    manifest = run / "student" / "dante_manifest.json"
    data = json.loads(manifest.read_text())
    data["teacher_compute"] = {"tokens_generated": 150_000, "tokens_scored": 50_000, "seconds_scoring": 12.0}
    manifest.write_text(json.dumps(data))
    text = build_report(run).read_text()
    table = text[text.index("### Before and after distillation") :].split("\n\n")[2]
    row = next(x for x in table.splitlines() if x.startswith("| gap recovered (GR)"))
    assert row.split("|")[2].strip() == "25"  # (32 − 18) / (74 − 18) = 25%
    per_m = next(x for x in table.splitlines() if x.startswith("| GR per million teacher tokens"))
    assert per_m.split("|")[2].strip() == "1.25"  # 0.25 / 0.2 M tokens
    assert "150,000 generated for the cache, 50,000 scored on the student's own samples (12 s); 200,000 in all" in text
