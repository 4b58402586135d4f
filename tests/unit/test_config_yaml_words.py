"""YAML 1.1 words reach text settings as written, from a file and from the environment.

Every text field of the settings tree (``str``, ``Literal`` of strings, ``SecretStr``,
``Path``, and their lists), found by walking the pydantic models, is given each word
that YAML 1.1 would turn into a boolean, a number or a date; what reaches pydantic must
be the text, and validation must never see ``True``/``False`` for it.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import PurePath
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from ioc.config import Settings, _env_overrides, load_settings
from ioc.config._base import is_text_type, load_yaml_as, options_of
from ioc.errors import ConfigError

# YAML 1.1 booleans (every spelling PyYAML resolves), YAML 1.2 booleans, and words that
# YAML 1.1 reads as numbers (sexagesimal, hex, octal, underscores, exponent) or a date.
WORDS = ["on", "off", "yes", "no", "y", "n", "On", "OFF", "Yes", "NO", "true", "false",
         "True", "FALSE", "12:30", "0x1F", "010", "1_000", "1e3", "2024-01-01"]
BOOL_WORDS = {"on": True, "off": False, "yes": True, "no": False, "y": True, "n": False,
              "true": True, "false": False, "ON": True, "No": False}

Seg = tuple[str, str]  # ("key", field) | ("dict", key) | ("item", "")


def _walk(model: type[BaseModel], path: tuple[Seg, ...] = (), depth: int = 0
          ) -> Iterator[tuple[tuple[Seg, ...], Any]]:
    """(path, annotation) of every leaf field under ``model``."""
    for name, field in model.model_fields.items():
        yield from _walk_ann((*path, ("key", name)), field.annotation, depth)


def _walk_ann(path: tuple[Seg, ...], ann: Any, depth: int) -> Iterator[tuple[tuple[Seg, ...], Any]]:
    opts = options_of(ann)
    one = opts[0] if len(opts) == 1 else None
    origin = typing.get_origin(one)
    if isinstance(one, type) and issubclass(one, BaseModel):
        if depth < 6:
            yield from _walk(one, path, depth + 1)
    elif origin in (list, tuple) and typing.get_args(one):
        args = typing.get_args(one)
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            yield from _walk_ann((*path, ("item", "")), args[0], depth)
        yield path, ann
    elif origin is dict:
        yield from _walk_ann((*path, ("dict", "k1")), typing.get_args(one)[1], depth)
    else:
        yield path, ann


LEAVES = list(_walk(Settings))
TEXT = [(p, a) for p, a in LEAVES if is_text_type(a)]
BOOLS = [(p, a) for p, a in LEAVES if options_of(a) == [bool]]


def _flow(path: tuple[Seg, ...], word: str) -> str:
    if not path:
        return word
    kind, name = path[0]
    inner = _flow(path[1:], word)
    return f"[{inner}]" if kind == "item" else f"{{{name}: {inner}}}"


def _at(data: Any, path: tuple[Seg, ...]) -> Any:
    for kind, name in path:
        data = data[0] if kind == "item" else data[name]
    return data


def _attr(obj: Any, path: tuple[Seg, ...]) -> Any:
    for kind, name in path:
        obj = obj[0] if kind == "item" else obj[name] if kind == "dict" else getattr(obj, name)
    if isinstance(obj, SecretStr):
        return obj.get_secret_value()
    return str(obj) if isinstance(obj, PurePath) else obj


def _env_name(path: tuple[Seg, ...]) -> str | None:
    if any(kind == "item" for kind, _ in path):
        return None  # list items cannot be addressed by a variable
    return "IOC_" + "__".join(name.upper() for _, name in path)


def _dotted(path: tuple[Seg, ...]) -> str:
    return ".".join("0" if kind == "item" else name for kind, name in path)


def _check_validation(path: tuple[Seg, ...], word: str, load: Any) -> str | None:
    """None if validation took the text; else what went wrong."""
    try:
        s = load()
    except ConfigError as exc:
        for where, msg in exc.problems:
            if "got True" in msg or "got False" in msg or "got 750" in msg:
                return f"{where}: {msg}"
        return None  # refused for another reason (pattern, choices, missing siblings)
    got = _attr(s, path)
    want = word
    if isinstance(got, list):
        got = got[0]
    return None if got == want else f"validated to {got!r}"


def test_the_walk_finds_the_text_fields_that_met_the_bug():
    dotted = {_dotted(p) for p, _ in TEXT}
    for name in ("database.timescaledb", "wall.compression", "kafka.security_protocol",
                 "namespace", "database.dsn", "kafka.ssl_cafile", "streams.kpis.0.equals.0",
                 "wall.screens.k1.tiles.0.view", "cameras.cameras.0.analytics.people.detector",
                 "kafka.bootstrap_servers.0", "gateway.publishers.k1.sources.0"):
        assert name in dotted, name
    assert len(TEXT) > 40 and len(BOOLS) > 10


@pytest.mark.parametrize("word", WORDS)
def test_every_text_field_gets_the_word_from_a_file(tmp_path, word):
    wrong = []
    for path, _ in TEXT:
        text = _flow(path, word)
        data = load_yaml_as(text, Settings)
        if _at(data, path) != word:
            wrong.append(f"{_dotted(path)}: read {_at(data, path)!r}")
            continue
        f = tmp_path / "c.yaml"
        f.write_text(text)
        if problem := _check_validation(path, word, lambda f=f: load_settings(f, env={})):
            wrong.append(f"{_dotted(path)}: {problem}")
    assert not wrong, wrong


@pytest.mark.parametrize("word", WORDS)
def test_every_text_field_gets_the_word_from_the_environment(word):
    wrong = []
    checked = 0
    for path, _ in TEXT:
        name = _env_name(path)
        if name is None:
            continue
        checked += 1
        data, _ = _env_overrides({name: word})
        if _at(data, path) != word:
            wrong.append(f"{name}: read {_at(data, path)!r}")
            continue
        if problem := _check_validation(path, word, lambda n=name: load_settings(env={n: word})):
            wrong.append(f"{name}: {problem}")
    assert checked > 25
    assert not wrong, wrong


def test_block_style_file_sets_the_literals_the_example_documents(tmp_path):
    f = tmp_path / "c.yaml"
    for word in ("on", "off", "auto"):
        f.write_text(f"database:\n  timescaledb: {word}\nwall:\n  compression: off\n")
        s = load_settings(f, env={})
        assert s.database.timescaledb == word and s.wall.compression == "off"
        s = load_settings(env={"IOC_DATABASE__TIMESCALEDB": word})
        assert s.database.timescaledb == word


def test_quoted_words_stay_text_and_quotes_are_removed(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("database:\n  timescaledb: 'on'\nkafka:\n  client_id: \"yes\"\n")
    s = load_settings(f, env={"IOC_WALL__COMPRESSION": "'off'"})
    assert (s.database.timescaledb, s.kafka.client_id, s.wall.compression) == ("on", "yes", "off")


@pytest.mark.parametrize("word", sorted(BOOL_WORDS))
def test_bool_fields_accept_the_yaml_words(tmp_path, word):
    wrong = []
    for path, _ in BOOLS:
        f = tmp_path / "c.yaml"
        f.write_text(_flow(path, word))
        loads = [lambda f=f: load_settings(f, env={})]
        if (name := _env_name(path)) is not None:
            loads.append(lambda n=name: load_settings(env={n: word}))
        for load in loads:
            try:
                s = load()
            except ConfigError as exc:
                bad = [p for p in exc.problems if p[0].split(" ")[0] == _dotted(path)]
                if bad:
                    wrong.append(bad)
                continue
            if _attr(s, path) is not BOOL_WORDS[word]:
                wrong.append(f"{_dotted(path)}={word} gave {_attr(s, path)!r}")
    assert not wrong, wrong


def test_mapping_keys_are_text(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("gateway:\n  publishers:\n    yes:\n      key_sha256: '" + "a" * 64 + "'\n"
                 "      sources: [on]\n")
    data = load_yaml_as(f.read_text(), Settings)
    assert list(data["gateway"]["publishers"]) == ["yes"]
    assert data["gateway"]["publishers"]["yes"]["sources"] == ["on"]


def test_null_and_numbers_still_work_where_they_are_meant(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("kafka:\n  ssl_cafile: ~\n  replication_factor: 3\n  request_timeout_s: 1e1\n"
                 "database:\n  passfile: null\n")
    s = load_settings(f, env={"IOC_KAFKA__SASL_USERNAME": "null"})
    assert s.kafka.ssl_cafile is None and s.database.passfile is None
    assert s.kafka.replication_factor == 3 and s.kafka.request_timeout_s == 10.0
    assert s.kafka.sasl_username == "null"  # a text field: the variable's text as written


def test_bad_value_still_reported_with_its_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("namespace: ioc\ndatabase:\n  timescaledb: yes\n")
    with pytest.raises(ConfigError) as ei:
        load_settings(f, env={})
    (where, msg), = ei.value.problems
    assert where == "database.timescaledb [line 3]"
    assert "got 'yes'" in msg
