"""Teacher backend settings live in sections (``teacher.vllm``, ``teacher.openai``) like
``cache.ray`` and ``eval.vllm``; recipes written before, with the keys flat, load unchanged (the
copies in old_recipes/ are the shipped configs as they were), keep their cache keys, and a flat
override on the command line still sets the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dante.cache.manifest import cache_key
from dante.config import load_recipe, resolved_dict
from dante.errors import ConfigError

HERE = Path(__file__).parent
CONFIGS = HERE.parents[1] / "configs"


@pytest.mark.parametrize("name", ["teacher-openai.yaml", "teacher-vllm.yaml"])
def test_an_old_flat_recipe_loads_as_the_sectioned_one(name):
    old, new = load_recipe(HERE / "old_recipes" / name), load_recipe(CONFIGS / name)
    assert old.teacher == new.teacher
    assert cache_key(old) == cache_key(new)


def test_the_sections_hold_the_flat_keys():
    r = load_recipe(HERE / "old_recipes" / "teacher-openai.yaml")
    assert (r.teacher.openai.base_url, r.teacher.openai.concurrency, r.teacher.openai.api) == (
        "http://127.0.0.1:8000/v1",
        32,
        "chat",
    )
    assert r.teacher.concurrency == 32  # the flat name still reads
    v = load_recipe(HERE / "old_recipes" / "teacher-vllm.yaml").teacher
    assert (v.vllm.tensor_parallel_size, v.vllm.max_model_len, v.tensor_parallel_size) == (4, 8192, 4)
    assert "base_url" not in resolved_dict(r)["teacher"] and "openai" in resolved_dict(r)["teacher"]


def test_a_flat_override_sets_the_key_of_a_sectioned_recipe():
    r = load_recipe(
        CONFIGS / "teacher-openai.yaml", ["teacher.base_url=http://10.1.2.3:9000/v1", "teacher.concurrency=4"]
    )
    assert (r.teacher.openai.base_url, r.teacher.openai.concurrency) == ("http://10.1.2.3:9000/v1", 4)
    nested = load_recipe(CONFIGS / "teacher-openai.yaml", ["teacher.openai.base_url=http://10.1.2.3:9000/v1"])
    assert nested.teacher.openai.base_url == r.teacher.openai.base_url


def test_errors_name_the_key_as_it_was_written(tmp_path):
    with pytest.raises(ConfigError, match=r"command-line override: teacher\.concurrency: Input should be greater"):
        load_recipe(None, ["teacher.concurrency=0"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("teacher:\n  backend: openai\n  max_retries: -1\n")
    with pytest.raises(ConfigError, match=r"line 3: teacher\.max_retries: Input should be greater"):
        load_recipe(recipe)


def test_the_same_key_flat_and_in_its_section_is_an_error_that_shows_no_secret(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "teacher:\n  api_key: sk-SECRET-9\n  base_url: http://a/v1\n  openai:\n    base_url: http://b/v1\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_recipe(recipe)
    assert "teacher.base_url and teacher.openai.base_url are both set" in str(exc.value)
    assert "SECRET" not in str(exc.value)
