"""How the settings are loaded: defaults, a YAML file, ``RAGOPS_*`` environment variables and flags.

Precedence, highest first: command-line flags > ``RAGOPS_*`` environment variables > the YAML file
(``--config``, else ``$RAGOPS_CONFIG``, else ``./ragops.yaml`` when present) > the defaults of the model.

Environment variables name a field by its path, sections joined with a double underscore:
``RAGOPS_STORE__LOCATION=http://qdrant:6333``, ``RAGOPS_EMBEDDING__BATCH_SIZE=64``, ``RAGOPS_ALIAS=docs``.
Values are read as YAML scalars, so ``64`` is a number and ``[a, b]`` a list; the values of secret fields
(every ``SecretStr``, ``rag.config.secret_paths()``) are taken verbatim, as strings, so that any API key can
be passed. Error messages never contain a secret's value (see ``rag.secrets``).

Relative paths in the YAML file are relative to the file's folder; relative paths from flags and
environment variables are relative to the working directory.

Nothing here knows ``Settings``: ``Settings.load`` hands its own class to ``load_settings``, so this module
imports no other module of the room and the room has no import circle.
"""

from __future__ import annotations

import os
import re
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, TypeVar, Union

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from rag.errors import ConfigError
from rag.secrets import mask

ENV_PREFIX = "RAGOPS_"
ENV_CONFIG_FILE = "RAGOPS_CONFIG"
DEFAULT_CONFIG_FILE = "ragops.yaml"

Model = TypeVar("Model", bound=BaseModel)


def load_settings(
    model: type[Model],
    path: Path | str | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Model:
    """``model`` (``Settings``) from its defaults, a YAML file, ``RAGOPS_*`` variables and flag overrides.

    Args and errors: ``Settings.load``.
    """
    env = os.environ if environ is None else environ
    origins: dict[tuple[str, ...], str] = {}
    raw: dict[str, Any] = {}
    secrets = secret_fields(model)

    file = _config_file(path, env)
    if file is not None:
        raw = _read_yaml(file)
        _resolve_relative_paths(raw, file.parent)
        for key in raw:
            origins[(key,)] = str(file)

    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG_FILE:
            continue
        keys = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        # An API key is opaque: YAML would turn "!x", "*x", "123", "a #b"... into errors, other types
        # or truncated strings, so secrets are taken as typed.
        _set_path(raw, keys, value if keys in secrets else _parse_scalar(value, name))
        origins[keys] = f"environment variable {name}"

    for keys, value in _flatten(overrides or {}):
        if value is None:
            continue
        _set_path(raw, keys, value)
        origins[keys] = "command-line flag"

    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(mask(_describe(exc, origins, model), _secret_values(raw, secrets))) from None


@lru_cache(maxsize=None)
def secret_fields(model: type[BaseModel]) -> frozenset[tuple[str, ...]]:
    """The path of every ``SecretStr`` field of ``model``, through its sections (not into lists or dicts).

    Found by walking the model tree, so a secret field added anywhere is covered without a list to
    keep up to date. Lists (``sources``) are not walked: an environment variable cannot name an item.
    """
    paths: set[tuple[str, ...]] = set()
    for name, field in model.model_fields.items():
        for kind in _field_types(field.annotation):
            if isinstance(kind, type) and issubclass(kind, SecretStr):
                paths.add((name,))
            elif isinstance(kind, type) and issubclass(kind, BaseModel):
                paths.update((name, *inner) for inner in secret_fields(kind))
    return frozenset(paths)


def _field_types(annotation: Any) -> list[Any]:
    """The types a field holds, through Optional, Union and Annotated (not into list or dict items)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _field_types(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [kind for arg in typing.get_args(annotation) for kind in _field_types(arg)]
    return [annotation]


def _secret_values(raw: Mapping[str, Any], paths: frozenset[tuple[str, ...]]) -> list[str]:
    """The secrets present in the merged raw settings, whatever their source, as the strings to mask."""
    values = []
    for path in paths:
        node: Any = raw
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, SecretStr):
            node = node.get_secret_value()
        if node is not None and not isinstance(node, (Mapping, list)):
            values.append(str(node))
    return values


def config_file(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The YAML file ``Settings.load`` reads for ``path``: it, else ``$RAGOPS_CONFIG``, else ./ragops.yaml if
    present, else None (defaults and environment only)."""
    return _config_file(path, os.environ if environ is None else environ)


def _config_file(path: Path | str | None, env: Mapping[str, str]) -> Path | None:
    if path is None and env.get(ENV_CONFIG_FILE):
        path = env[ENV_CONFIG_FILE]
    if path is None:
        default = Path(DEFAULT_CONFIG_FILE)
        return default if default.is_file() else None
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist; pass an existing file to --config")
    return file


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {file} is not valid YAML: {_yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {file} must hold a mapping of settings, not {type(data).__name__}")
    return data


# PyYAML quotes the offending alias, anchor or tag in its problem text; those are the file's content.
_QUOTED_CONTENT = re.compile(r"""\b(alias|anchor|tag|handle) (?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


def _yaml_problem(exc: Exception) -> str:
    """Where and what the YAML error is, without the file's text.

    PyYAML's own message quotes the offending line, which may be ``api_key: <the key>``; so only
    the position (1-based line and column) and the problem are shown.
    """
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = _QUOTED_CONTENT.sub(r"\1 (not shown)", exc.problem or "syntax error")
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    if isinstance(exc, yaml.MarkedYAMLError):
        return _QUOTED_CONTENT.sub(r"\1 (not shown)", exc.problem or exc.context or "syntax error")
    # ReaderError and UnicodeDecodeError name a byte position and a code, never the text.
    return " ".join(str(exc).split())


def _resolve_relative_paths(raw: dict[str, Any], base: Path) -> None:
    """Make the file's relative paths relative to the file, not to wherever ragops runs."""
    for source in raw.get("sources") or []:
        if isinstance(source, dict) and isinstance(source.get("path"), str):
            source["path"] = str(_under(base, source["path"]))
    store = raw.get("store")
    if isinstance(store, dict) and isinstance(store.get("location"), str):
        if not store["location"].startswith(("http://", "https://")):
            store["location"] = str(_under(base, store["location"]))
    embedding = raw.get("embedding")
    if isinstance(embedding, dict) and isinstance(embedding.get("model"), str):
        if embedding["model"].startswith(("./", "../")):
            embedding["model"] = str(_under(base, embedding["model"]))
    evaluation = raw.get("evaluation")
    if isinstance(evaluation, dict):
        if isinstance(evaluation.get("golden"), str):
            evaluation["golden"] = str(_under(base, evaluation["golden"]))
        if isinstance(evaluation.get("query_model"), str) and evaluation["query_model"].startswith(("./", "../")):
            evaluation["query_model"] = str(_under(base, evaluation["query_model"]))


def _under(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _parse_scalar(value: str, name: str) -> Any:
    try:
        return yaml.safe_load(value) if value.strip() else value
    except yaml.YAMLError:
        # The value is not shown: a misspelt secret's name would not be in secret_paths().
        raise ConfigError(
            f"environment variable {name} is not a valid YAML value; put it in quotes to pass a string"
        ) from None


def _set_path(raw: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    node = raw
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    items: list[tuple[tuple[str, ...], Any]] = []
    for key, value in tree.items():
        if isinstance(value, Mapping):
            items.extend(_flatten(value, prefix + (key,)))
        else:
            items.append((prefix + (key,), value))
    return items


def _describe(exc: ValidationError, origins: dict[tuple[str, ...], str], root: type[BaseModel]) -> str:
    """Every problem of a configuration, one per line (one problem: one line), each naming its setting as
    the file spells it (``sources[0].include``), where its value came from, and the setting or value meant
    when the one given is a near miss."""
    problems = [_problem(error, origins, root) for error in exc.errors()]
    if len(problems) == 1:
        return f"invalid configuration: {problems[0]}"
    return f"invalid configuration ({len(problems)} problems):\n" + "\n".join(f"  {problem}" for problem in problems)


def _problem(error: Any, origins: dict[tuple[str, ...], str], root: type[BaseModel]) -> str:
    loc = tuple(str(part) for part in error["loc"])
    origin = next((origins[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in origins), "default")
    where, owner = _locate(error["loc"], root)
    message = error["msg"].removeprefix("Value error, ")
    kind, context = error["type"], error.get("ctx") or {}
    if kind == "extra_forbidden":
        meant = _near(loc[-1], list(owner.model_fields) if owner else [])
        message = ("unknown setting" + (f", did you mean {meant}?" if meant else
                                        " (check the spelling; docs/configuration.md lists every setting)"))
    elif kind in ("literal_error", "union_tag_invalid"):
        given = error.get("input")
        if kind == "union_tag_invalid":  # the tag's own key, which pydantic leaves out of the location
            given, key = context.get("tag"), str(context.get("discriminator", "kind")).strip("'")
            where = f"{where}.{key}"
        # The allowed values, not the input (which may be a secret typed in the wrong place).
        allowed = re.findall(r"'([^']*)'", str(context.get("expected") or context.get("expected_tags") or ""))
        if isinstance(given, str) and (meant := _near(given, allowed)):
            message += f"; did you mean {meant!r}?"
    return f"{where}: {message} (from {origin})"


def _near(word: str, candidates: list[str]) -> str | None:
    """The candidate ``word`` is most likely a misspelling of, if any is close enough."""
    import difflib

    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


def _locate(loc: tuple[int | str, ...], root: type[BaseModel]) -> tuple[str, type[BaseModel] | None]:
    """Where an error is, as the file spells it from ``root`` down, and the model whose keys its last part is one of.

    pydantic's location names a list item by its index and a source by its ``kind`` too
    (``sources.0.folder.include``): shown as ``sources[0].include``, the ``kind`` being no key of the file.
    """
    where, owner, annotation = "", None, root
    for part in loc:
        kinds = _field_types(annotation) if annotation is not None else []
        if isinstance(part, int):
            where += f"[{part}]"
            items = [typing.get_args(k) for k in kinds if typing.get_origin(k) in (list, tuple)]
            annotation = items[0][0] if items and items[0] else None
            continue
        models = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)]
        tagged = [m for m in models if _union_tag(m) == part]
        if len(models) > 1 and tagged:  # the member of a tagged union pydantic chose
            annotation = tagged[0]
            continue
        owner = models[0] if len(models) == 1 else None
        where += f".{part}" if where else str(part)
        field = owner.model_fields.get(part) if owner else None
        annotation = field.annotation if field else None
    return where or "(top level)", owner


def _union_tag(model: type[BaseModel]) -> str | None:
    """The tag that picks ``model`` in a tagged union (a source's ``kind``), if it has one."""
    field = model.model_fields.get("kind")
    return field.default if field is not None and typing.get_origin(field.annotation) is Literal else None
