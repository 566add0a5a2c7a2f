"""Configuration: precedence, relative paths, and errors that name the key and where it came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import Settings
from rag.errors import ConfigError


def test_defaults_without_any_file() -> None:
    settings = Settings.load(environ={})
    assert settings.alias == "docs"
    assert settings.retention == 3
    assert settings.store.location == ".ragops/qdrant"
    assert settings.embedding.model == "all-MiniLM-L6-v2"
    assert settings.sources == []
    with pytest.raises(ConfigError, match="no sources to index: add `sources:`"):
        settings.require_sources()  # only indexing needs one


def test_flag_beats_env_beats_file_beats_default(tmp_path: Path) -> None:
    file = tmp_path / "ragops.yaml"
    file.write_text("alias: from-file\nretention: 5\nembedding:\n  batch_size: 8\n")
    env = {"RAGOPS_ALIAS": "from-env", "RAGOPS_EMBEDDING__BATCH_SIZE": "64"}

    settings = Settings.load(file, environ=env, overrides={"alias": "from-flag", "store": {"location": None}})

    assert settings.alias == "from-flag"  # flag
    assert settings.embedding.batch_size == 64  # env over file, parsed as a number
    assert settings.retention == 5  # file over default
    assert settings.embedding.dtype == "float32"  # default


def test_relative_paths_in_the_file_are_relative_to_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    file = folder / "ragops.yaml"
    file.write_text("sources:\n  - path: docs\nstore:\n  location: ../store\nembedding:\n  model: ./models/m\n")

    settings = Settings.load(file, environ={})

    assert settings.sources[0].path == folder / "docs"
    assert settings.sources[0].name == "docs"
    assert Path(settings.store.location) == folder / "../store"
    assert Path(settings.embedding.model) == folder / "models/m"


def test_server_url_is_not_treated_as_a_path(tmp_path: Path) -> None:
    file = tmp_path / "ragops.yaml"
    file.write_text("store:\n  location: http://qdrant:6333\n  api_key: s3cret\n")
    settings = Settings.load(file, environ={})
    assert settings.store.location == "http://qdrant:6333"
    assert settings.store.is_remote
    assert "s3cret" not in str(settings.model_dump(mode="json"))  # masked in ragops config output


def test_env_config_file_variable(tmp_path: Path) -> None:
    file = tmp_path / "elsewhere.yaml"
    file.write_text("alias: elsewhere\n")
    assert Settings.load(environ={"RAGOPS_CONFIG": str(file)}).alias == "elsewhere"


@pytest.mark.parametrize(
    ("yaml_text", "env", "expected"),
    [
        ("retention: 1\n", {}, "retention: Input should be greater than or equal to 2 (from "),
        ("embedding:\n  batch_sise: 3\n", {}, "embedding.batch_sise: unknown setting"),
        ("alias: Bad Name\n", {}, "alias: String should match pattern"),
        ("alias: a__b\n", {}, "alias: must not contain '__'"),
        ("", {"RAGOPS_EMBEDDING__DTYPE": "int8"}, "(from environment variable RAGOPS_EMBEDDING__DTYPE)"),
        ("chunking:\n  max_tokens: 32\n  overlap_tokens: 40\n", {}, "overlap_tokens must be smaller than max_tokens"),
        ("sources:\n  - path: a/docs\n  - path: b/docs\n", {}, "two sources are named 'docs'"),
    ],
)
def test_invalid_values_name_the_key_and_origin(tmp_path: Path, yaml_text: str, env: dict, expected: str) -> None:
    file = tmp_path / "ragops.yaml"
    file.write_text(yaml_text)
    with pytest.raises(ConfigError) as error:
        Settings.load(file, environ=env)
    assert expected in str(error.value)
    assert "\n" not in str(error.value)  # one problem, one line


def test_every_problem_on_a_line_of_its_own_with_the_setting_meant(tmp_path: Path) -> None:
    """Several mistakes: one line each (not one line joined with "; "), each naming the setting as the file
    spells it (no pydantic-internal `folder` segment), and the setting or value a near miss meant."""
    file = tmp_path / "ragops.yaml"
    file.write_text("retention: 1\nsourcse: []\nsources:\n  - path: docs\n    inclde: ['*.md']\n"
                    "  - kind: folde\n    path: more\nembedding:\n  batch_sise: 3\n  backend: onxx\n")

    with pytest.raises(ConfigError) as error:
        Settings.load(file, environ={"RAGOPS_STORE__LOCATON": "x"})

    first, *problems = str(error.value).splitlines()
    assert first == "invalid configuration (7 problems):"
    origin = f"(from {file})"
    assert sorted(problems) == sorted([
        f"  retention: Input should be greater than or equal to 2 {origin}",
        f"  sourcse: unknown setting, did you mean sources? {origin}",
        f"  sources[0].inclde: unknown setting, did you mean include? {origin}",
        "  sources[1].kind: Input tag 'folde' found using 'kind' does not match any of the expected tags: 'folder', "
        f"'s3'; did you mean 'folder'? {origin}",
        f"  embedding.batch_sise: unknown setting, did you mean batch_size? {origin}",
        f"  embedding.backend: Input should be 'torch' or 'onnx'; did you mean 'onnx'? {origin}",
        "  store.locaton: unknown setting, did you mean location? (from environment variable RAGOPS_STORE__LOCATON)",
    ])
    far = tmp_path / "far.yaml"
    far.write_text("embedding:\n  colour: blue\n")
    with pytest.raises(ConfigError, match=r"embedding\.colour: unknown setting \(check the spelling; "):
        Settings.load(far, environ={})


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(tmp_path / "nope.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("alias: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Settings.load(bad, environ={})
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        Settings.load(listy, environ={})
