"""Cache writer: sharding, torn-line recovery, exactly-once, refusing a foreign cache, disk errors."""

import errno
import json

import pytest

from dante.cache.records import CacheRecord, read_cache, validate_cache
from dante.cache.run import run_cache
from dante.cache.stats import cache_stats, render_stats
from dante.cache.writer import CacheWriter
from dante.config import load_recipe
from dante.errors import DanteError
from dante.teacher.base import Generation, Teacher


def rec(i):
    return CacheRecord(
        prompt=f"p{i}", teacher_text=f"t{i}", output_entropy=0.1 * i, completion_tokens=i, finish_reason="stop"
    )


def test_shards_partial_and_manifest(tmp_path):
    w = CacheWriter(tmp_path, shard_size=4, flush_every=2)
    assert w.open() == set()
    for i in range(10):
        w.add(rec(i))
    w.flush()
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == ["shard-00000.jsonl", "shard-00001.jsonl"]
    assert len(read_cache(tmp_path)) == 8  # readers see sealed shards only
    w.close(seal=True)
    assert len(read_cache(tmp_path)) == 10 and not list(tmp_path.glob(".partial-*"))
    assert json.loads((tmp_path / "manifest.json").read_text())["records"] == 10


def test_torn_last_line_is_cut_and_ids_are_not_repeated(tmp_path):
    w = CacheWriter(tmp_path, shard_size=100, flush_every=1)
    w.open()
    for i in range(3):
        w.add(rec(i))
    w.close()
    partial = tmp_path / ".partial-00000.jsonl"
    partial.write_bytes(partial.read_bytes() + rec(3).to_json().encode()[:25])  # a kill mid-write
    w2 = CacheWriter(tmp_path, shard_size=100, flush_every=1)
    done = w2.open()
    assert done == {rec(i).id for i in range(3)}
    w2.add(rec(1))  # already written: ignored
    w2.add(rec(3))
    w2.close(seal=True)
    records = read_cache(tmp_path)
    assert [r.prompt for r in records] == ["p0", "p1", "p2", "p3"]
    assert validate_cache(tmp_path) == (4, [])


def test_full_partial_left_by_a_kill_before_the_seal_is_sealed_on_resume(tmp_path):
    """A run killed after filling its partial shard but before renaming it: the resumed writer
    seals it as it is (no blank line appended) and writes new records to the next shard."""
    (tmp_path / ".partial-00000.jsonl").write_text("".join(rec(i).to_json() + "\n" for i in range(3)))  # full, unsealed
    w2 = CacheWriter(tmp_path, shard_size=3, flush_every=1)
    assert w2.open() == {rec(i).id for i in range(3)}
    w2.add(rec(3))
    w2.close(seal=True)
    first = (tmp_path / "shard-00000.jsonl").read_bytes()
    assert first.count(b"\n") == 3 and b"\n\n" not in first
    assert [r.prompt for r in read_cache(tmp_path)] == ["p0", "p1", "p2", "p3"]
    assert json.loads((tmp_path / "manifest.json").read_text())["shards"] == ["shard-00000.jsonl", "shard-00001.jsonl"]


def test_second_writer_is_refused(tmp_path):
    w = CacheWriter(tmp_path)
    w.open()
    with pytest.raises(DanteError, match="another"):
        CacheWriter(tmp_path).open()
    w.close()


class FakeTeacher(Teacher):
    name = "fake"

    def __init__(self, cfg, fail_after=None):
        super().__init__(cfg)
        self.calls = 0
        self.fail_after = fail_after

    def generate(self, prompts, sampling):
        return [
            [
                Generation(f"answer to {p.prompt}", 3, "stop", [0.5, 1.0, 1.5] if sampling.top_logprobs else None, 5)
                for _ in range(sampling.n)
            ]
            for p in prompts
        ]


def make_recipe(tmp_path, n=7, **teacher):
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"prompt {i}"}) + "\n" for i in range(n)))
    return load_recipe(
        data={
            "output_dir": str(tmp_path / "run"),
            "teacher": {"model": "fake", "batch_size": 2, **teacher},
            "prompts": {"source": str(f)},
            "cache": {"shard_size": 3, "flush_every": 2},
        }
    )


def test_run_cache_resume_skips_done_and_refuses_other_settings(tmp_path):
    r = make_recipe(tmp_path)
    s = run_cache(r, teacher=FakeTeacher(r.teacher))
    assert (s.written, s.records, s.shards) == (7, 7, 3) and "7/7 prompts" in str(s)
    records = read_cache(r.cache_dir)
    assert (
        records[0].output_entropy == 1.0 and records[0].self_consistency is None and records[0].consistency_samples == 0
    )
    assert records[0].difficulty_score == pytest.approx(1.0 / 3.0)
    assert (r.cache_dir / "resolved_recipe.yaml").exists()
    again = run_cache(r, teacher=FakeTeacher(r.teacher))
    assert (again.written, again.skipped) == (0, 7)
    # an operational change resumes; a content change is refused with the changed key named
    run_cache(make_recipe(tmp_path, batch_size=4), teacher=FakeTeacher(r.teacher))
    with pytest.raises(DanteError) as exc:
        run_cache(make_recipe(tmp_path, temperature=0.7))
    assert "teacher.temperature" in str(exc.value) and "another cache.dir" in str(exc.value)


@pytest.mark.parametrize("fail_after", [5, 7, 9, 11, 14])  # mid-flush, mid-seal, mid-manifest, ...
def test_disk_full_stops_clearly_and_stays_resumable(tmp_path, monkeypatch, fail_after):
    import dante.cache.writer as writer_mod

    r = make_recipe(tmp_path, n=9)
    real_fsync, calls = writer_mod.os.fsync, {"n": 0}

    def full_disk(fd):
        calls["n"] += 1
        if calls["n"] > fail_after:  # os.fsync is shared by every module
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(writer_mod.os, "fsync", full_disk)
    with pytest.raises(DanteError) as exc:
        run_cache(r, teacher=FakeTeacher(r.teacher))
    assert "disk full" in str(exc.value) and str(r.cache_dir) in str(exc.value)
    monkeypatch.setattr(writer_mod.os, "fsync", real_fsync)
    s = run_cache(r, teacher=FakeTeacher(r.teacher))
    records = read_cache(r.cache_dir)
    assert len(records) == 9 and len({x.id for x in records}) == 9
    assert s.skipped == (3 if fail_after == 11 else s.skipped)  # the sealed shard was kept
    assert validate_cache(r.cache_dir)[1] == []


def test_stats(tmp_path):
    r = make_recipe(tmp_path, n=4)
    run_cache(r, teacher=FakeTeacher(r.teacher))
    st = cache_stats(r.cache_dir)
    assert st["records"] == 4 and st["shards"] == 2 and st["completion_tokens"] == 12 and st["prompt_tokens"] == 20
    assert st["finish_reasons"] == {"stop": 4} and st["output_entropy"]["mean"] == 1.0
    assert st["null_share"]["self_consistency"] == 1.0 and sum(b["count"] for b in st["entropy_histogram"]) == 4
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(render_stats(st))
    assert "output_entropy" in console.export_text()


def test_manifest_records_teacher_compute_across_resumes(tmp_path, teacher_dir):
    from dante.cache.manifest import read_manifest
    from dante.cache.run import run_cache
    from dante.config import load_recipe
    from dante.models import cpu_description

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"q{i}?"}) + "\n" for i in range(4)))
    data = {
        "output_dir": str(tmp_path / "run"),
        "teacher": {"backend": "hf", "model": str(teacher_dir), "max_new_tokens": 2},
        "prompts": {"source": str(prompts), "limit": 2},
    }
    run_cache(load_recipe(data=data))
    first = read_manifest(tmp_path / "run" / "cache")
    assert first["device_type"] == "cpu" and first["device_count"] == 1 and first["wall_time_s"] > 0
    assert first["device_name"] == cpu_description()  # the CPU and its kernels: what reproducing a cache needs
    data["prompts"]["limit"] = 4
    run_cache(load_recipe(data=data))
    second = read_manifest(tmp_path / "run" / "cache")
    assert second["wall_time_s"] > first["wall_time_s"]
    assert second["device_hours"] == pytest.approx(second["wall_time_s"] / 3600)
    assert second["device_name"] == first["device_name"]


def test_a_dante_cache_folder_reads_only_its_shards(tmp_path):
    from dante.cache.records import cache_files

    (tmp_path / "shard-00000.jsonl").write_text("")
    (tmp_path / "notes.jsonl").write_text("")
    assert [p.name for p in cache_files(tmp_path)] == ["notes.jsonl", "shard-00000.jsonl"]  # someone else's folder
    (tmp_path / "manifest.json").write_text("{}")
    assert [p.name for p in cache_files(tmp_path)] == ["shard-00000.jsonl"]
