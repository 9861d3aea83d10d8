"""Teacher backend settings live in sections (``teacher.hf``, ``teacher.vllm``, ``teacher.openai``)
like ``teacher.ray`` and ``eval.vllm``; recipes written before, with the keys flat, load unchanged
(the copies in old_recipes/ are the shipped configs as they were) with a one-line notice a key,
keep their cache keys, and a flat override on the command line still sets the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dante.cache.manifest import cache_key
from dante.config import load_recipe, resolved_dict
from dante.errors import ConfigError

HERE = Path(__file__).parent
CONFIGS = HERE.parents[1] / "configs"


@pytest.mark.parametrize("name", ["teacher-openai.yaml", "teacher-vllm.yaml", "demo.yaml", "reasoning.yaml"])
def test_an_old_flat_recipe_loads_as_the_sectioned_one(name, capsys):
    new = load_recipe(CONFIGS / name)
    assert capsys.readouterr().err == ""  # the shipped recipes use no old key
    old = load_recipe(HERE / "old_recipes" / name)
    notices = capsys.readouterr().err.splitlines()
    keys = ("dante: recipe key teacher.", "dante: recipe key train.loss.")  # the engines' and the terms' old keys
    assert notices and all(n.startswith(keys) and "read as such" in n for n in notices)
    assert old.teacher == new.teacher and old.train.loss == new.train.loss
    assert cache_key(old) == cache_key(new)  # a cache written before resumes


def test_the_sections_hold_the_flat_keys():
    r = load_recipe(HERE / "old_recipes" / "teacher-openai.yaml")
    assert (r.teacher.openai.base_url, r.teacher.openai.concurrency, r.teacher.openai.api) == (
        "http://127.0.0.1:8000/v1",
        32,
        "chat",
    )
    assert not hasattr(r.teacher, "concurrency")  # read from the section only: one place for each setting
    v = load_recipe(HERE / "old_recipes" / "teacher-vllm.yaml").teacher
    assert (v.vllm.tensor_parallel_size, v.vllm.max_model_len) == (4, 8192)
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


def test_renamed_keys_load_under_their_old_names_with_a_one_line_notice(capsys):
    """cache.engine / cache.ray / cache.batch, as recipes wrote them before the Ray pool and the
    Batch API client became teacher engines, are teacher.dispatch / teacher.ray / teacher.batch_api."""
    old = load_recipe(HERE / "old_recipes" / "cache-ray.yaml")
    notices = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dante: recipe key")]
    assert notices == [
        "dante: recipe key cache.engine is now teacher.dispatch; read as such",
        "dante: recipe key cache.ray is now teacher.ray; read as such",
        "dante: recipe key cache.batch is now teacher.batch_api; read as such",
    ]
    new = load_recipe(
        None,
        [
            "teacher.model=tiny",
            "teacher.dispatch=ray",
            "teacher.ray.replicas=4",
            "teacher.ray.cpus_per_replica=2",
            "teacher.batch_api.max_requests=1000",
            "cache.shard_size=500",
        ],
    )
    assert capsys.readouterr().err == ""  # the new names: no notice
    assert old.teacher == new.teacher and old.cache == new.cache
    assert (old.teacher.dispatch, old.teacher.ray.replicas, old.teacher.batch_api.max_requests) == ("ray", 4, 1000)
    assert cache_key(old) == cache_key(load_recipe(None, ["teacher.model=tiny", "cache.shard_size=500"]))
    override = load_recipe(None, ["cache.engine=batch"])  # an old name on the command line too
    assert override.teacher.dispatch == "batch"


def test_an_old_and_a_new_name_together_is_an_error():
    with pytest.raises(ConfigError, match="cache.engine and teacher.dispatch are both set"):
        load_recipe(None, ["cache.engine=ray", "teacher.dispatch=local"])


# The shipped recipes' cache keys as written before the llamacpp engine's section existed: a new
# engine section (or any other schema addition) must not move every existing cache's key. A change
# of a recipe's content settings changes its key on purpose: update the value with it.
KEYS = {
    "demo.yaml": "c64661dc88ecdc10",
    "reasoning.yaml": "4f757e7107a2c51e",
    "products.yaml": "78228b0ccc047cc8",
    "teacher-openai.yaml": "bbd2ea58fa908833",
    "teacher-vllm.yaml": "9f4f6d1a25bbce0b",
}


@pytest.mark.parametrize("name", sorted(KEYS))
def test_a_new_engine_section_leaves_every_cache_key_as_it_was(name):
    recipe = load_recipe(CONFIGS / name)
    assert cache_key(recipe) == KEYS[name]
    served = load_recipe(CONFIGS / name, ["teacher.backend=llamacpp", "teacher.llamacpp.parallel=4"])
    slots = load_recipe(CONFIGS / name, ["teacher.backend=llamacpp", "teacher.llamacpp.parallel=8"])
    assert cache_key(served) != KEYS[name] and cache_key(served) == cache_key(slots)  # slots are not content
