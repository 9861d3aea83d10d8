"""Recipes: YAML + dotted overrides, errors that name file, line and key; secrets never saved."""

import pytest
import yaml

from dante.config import load_recipe, recipe_hash, save_resolved
from dante.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "recipe.yaml"
    p.write_text(text)
    return p


def test_overrides_are_typed_and_nested(tmp_path):
    p = write(tmp_path, "teacher:\n  model: m\n  batch_size: 4\n")
    r = load_recipe(p, ["teacher.batch_size=16", "train.loss.tea.enabled=false", "train.lr=3e-5"])
    assert r.teacher.batch_size == 16
    assert r.train.loss.tea.enabled is False
    assert r.train.lr == pytest.approx(3e-5)


def test_unknown_key_names_file_line_and_key(tmp_path):
    p = write(tmp_path, "name: x\nteacher:\n  model: m\n  batch_sz: 3\n")
    with pytest.raises(ConfigError) as exc:
        load_recipe(p)
    msg = str(exc.value)
    assert str(p) in msg and "line 4" in msg and "teacher.batch_sz: unknown key" in msg


def test_wrong_type_names_key(tmp_path):
    p = write(tmp_path, "train:\n  steps: many\n")
    with pytest.raises(ConfigError, match=r"line 2: train.steps: .*integer"):
        load_recipe(p)


def test_wrong_type_in_override_is_attributed_to_the_command_line(tmp_path):
    p = write(tmp_path, "teacher:\n  model: m\n")
    with pytest.raises(ConfigError, match="command-line override: teacher.batch_size"):
        load_recipe(p, ["teacher.batch_size=abc"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    p = write(tmp_path, "teacher: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(p)


def test_resolved_recipe_never_contains_the_api_key(tmp_path):
    r = load_recipe(None, ["teacher.api_key=sk-SECRET-123"])
    assert r.teacher.openai.api_key.get_secret_value() == "sk-SECRET-123"
    path = save_resolved(r, tmp_path)
    text = path.read_text()
    assert "sk-SECRET-123" not in text
    assert yaml.safe_load(text)["teacher"]["openai"]["api_key"] == "**********"  # saved in its section
    assert "sk-SECRET-123" not in repr(r)


def test_batch_tokens_replaces_batch_sequences_and_hash_tracks_changes():
    r = load_recipe(None, ["train.batch_tokens=4096"])
    assert r.train.batch_sequences is None
    assert recipe_hash(load_recipe(None, ["teacher.model=a"])) != recipe_hash(load_recipe(None, ["teacher.model=b"]))


def test_credentials_in_the_base_url_are_never_saved(tmp_path):
    from dante.config import save_resolved

    recipe = load_recipe(
        data={"teacher": {"backend": "openai", "base_url": "https://me:sk-SECRET42@api.example.com/v1"}}
    )
    text = save_resolved(recipe, tmp_path).read_text()
    assert "sk-SECRET42" not in text and "https://***@api.example.com/v1" in text
    assert recipe.teacher.openai.base_url == "https://me:sk-SECRET42@api.example.com/v1"  # the engine still gets it


def test_the_curriculum_default_is_the_one_chosen_on_validation_and_the_card_recipe_keeps_its_own():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    assert load_recipe(data={"name": "x"}).train.curriculum == "shuffle"  # BENCHMARKS 6d
    assert load_recipe(root / "configs" / "demo.yaml").train.curriculum == "shuffle"
    assert load_recipe(root / "configs" / "dante-mosaic-3.5b.yaml").train.curriculum == "entropy"
