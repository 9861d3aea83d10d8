"""The per-item correctness the paired tests read from lm-eval's logged samples."""

import json

from dante.eval.scores import correct_by_doc


def test_correct_by_doc_reads_one_filters_copy_by_doc_id(tmp_path):
    rows = [{"doc_id": i, "filter": "strict-match", "exact_match": float(i % 2)} for i in range(4)]
    rows += [{"doc_id": i, "filter": "flexible-extract", "exact_match": 1.0} for i in range(4)]  # other filter's copy
    rows.append({"doc_id": 9, "filter": "strict-match", "score": 1.0})  # a row without the metric is not counted
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"doc_id": 7, "filter"'  # a torn last line is skipped
    (tmp_path / "samples_t.jsonl").write_text(text)
    assert correct_by_doc(tmp_path, "t", "exact_match", "strict-match") == {0: False, 1: True, 2: False, 3: True}
    assert correct_by_doc(tmp_path, "t", "exact_match", "flexible-extract") == dict.fromkeys(range(4), True)
    assert correct_by_doc(tmp_path, "other_task", "exact_match", "strict-match") is None  # samples not logged
