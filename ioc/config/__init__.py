"""One frozen, validated settings tree, loaded from YAML and overridden by environment.

``load_settings(path)`` reads a YAML file (optional), applies ``IOC_*`` environment
variables (``IOC_KAFKA__BOOTSTRAP_SERVERS=host:9092`` sets ``kafka.bootstrap_servers``;
values are parsed as YAML, so lists and numbers work) and validates the result.
Files and environment values are read in the shape of the settings (see ``_base``): a
text or ``Literal`` field receives the text as written (``on``, ``off``, ``yes``, ``no``,
``y``, ``n``, ``true``, ``12:30`` ...), never a YAML 1.1 boolean or number.
Every problem is reported at once with the dotted path of the bad key and, for
keys from the file, its line.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from ..errors import ConfigError
from ._base import (
    RENAMED_KEY,
    Section,
    SettingsLoader,
    construct_as,
    is_text_type,
    load_yaml_as,
    options_of,
)
from ._cameras import CamerasSettings
from ._gateway import GatewaySettings
from ._infra import DatabaseSettings, KafkaSettings, default_state_dir
from ._metrics import MetricsSettings
from ._replay import ReplaySettings
from ._scorecard import ScorecardSettings
from ._streams import StreamsSettings
from ._topics import TopicSettings
from ._wall import WallSettings

__all__ = [
    "CamerasSettings",
    "DatabaseSettings",
    "GatewaySettings",
    "KafkaSettings",
    "MetricsSettings",
    "ReplaySettings",
    "ScorecardSettings",
    "Settings",
    "StreamsSettings",
    "TopicSettings",
    "WallSettings",
    "default_state_dir",
    "load_settings",
]

# Environment variables of the tooling, not settings keys.
_RESERVED_ENV = {"IOC_CONFIG", "IOC_STATE_DIR", "IOC_CACHE_DIR", "IOC_KAFKA_PORT", "IOC_PG_PORT",
                 "IOC_DATA_DIR", "IOC_TEST_NAMESPACE"}


class Settings(Section):
    """The whole configuration of one deployment (or one test run / replay namespace)."""

    namespace: str = Field(
        "ioc",
        pattern=r"^[a-z][a-z0-9_]{0,39}$",
        description="prefix of every topic and the database schema; isolates replays and tests",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    streams: StreamsSettings = Field(default_factory=StreamsSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    cameras: CamerasSettings = Field(default_factory=CamerasSettings)
    wall: WallSettings = Field(default_factory=WallSettings)
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    scorecards: ScorecardSettings = Field(default_factory=ScorecardSettings)

    @property
    def db_schema(self) -> str:
        """The database schema holding this namespace's tables."""
        return self.namespace

    def with_namespace(self, namespace: str) -> Settings:
        """The same settings in another namespace (replays, tests)."""
        data = self.model_dump()
        data["namespace"] = namespace
        return Settings.model_validate(data)


def _lines_of(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path of a YAML mapping document to its 1-based line."""
    out: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                p = (*path, str(key.value))
                out[p] = key.start_mark.line + 1
                walk(value, p)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                p = (*path, str(i))
                out[p] = item.start_mark.line + 1
                walk(item, p)

    try:
        root = yaml.compose(text, Loader=SettingsLoader)
    except yaml.YAMLError:
        return out
    if root is not None:
        walk(root, ())
    return out


def _env_overrides(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    data: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}
    top = set(Settings.model_fields)
    for name, raw in sorted(env.items()):
        if not name.startswith("IOC_") or name in _RESERVED_ENV:
            continue
        parts = tuple(p.lower() for p in name[4:].split("__"))
        if parts[0] not in top or not all(parts):
            continue
        value = _env_value(raw, _annotation_at(parts))
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = value
            origin[parts] = name
    return data, origin


def _annotation_at(parts: tuple[str, ...]) -> Any:
    """The annotation of the settings field at ``parts`` (dict keys allowed), else None."""
    ann: Any = Settings
    for p in parts:
        opts = options_of(ann)
        one = opts[0] if len(opts) == 1 else None
        if isinstance(one, type) and issubclass(one, BaseModel):
            field = one.model_fields.get(p)
            ann = None if field is None else field.annotation
        elif typing.get_origin(one) is dict and len(typing.get_args(one)) == 2:
            ann = typing.get_args(one)[1]
        else:
            return None
        if ann is None:
            return None
    return ann


def _env_value(raw: str, ann: Any) -> Any:
    """An environment value for a field annotated ``ann``: text fields get the text as
    written (a quoted YAML scalar is unquoted), others are parsed as YAML."""
    if not raw.strip():
        return raw
    try:
        loader = SettingsLoader(raw)
        try:
            node = loader.get_single_node()
            if is_text_type(ann):
                if isinstance(node, yaml.ScalarNode) and node.style in ("'", '"'):
                    return node.value
                return raw
            value = None if node is None else construct_as(loader, node, ann)
        finally:
            loader.dispose()
    except yaml.YAMLError:
        return raw
    if value is not None and not isinstance(value, (dict, list, int, float, bool, str)):
        # Keep strings that YAML would turn into dates or other types as given.
        return raw
    return value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load, merge and validate settings.

    Args:
        path: a YAML file; None means ``$IOC_CONFIG`` if set, else defaults only.
        env: environment to read ``IOC_*`` overrides from (default ``os.environ``).
        overrides: a final mapping applied on top (used by tests and replays).

    Raises:
        ConfigError: listing every problem with the dotted path of the bad key.
    """
    env = os.environ if env is None else env
    if path is None and env.get("IOC_CONFIG"):
        path = env["IOC_CONFIG"]
    data: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    source = None
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([("(file)", f"cannot read: {exc.strerror}")], source=source) from exc
        try:
            loaded = load_yaml_as(text, Settings)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark else "(file)"
            raise ConfigError([(where, f"not valid YAML: {exc}")], source=source) from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                [("(root)", f"expected a mapping of sections, got {type(loaded).__name__}")],
                source=source,
            )
        data = loaded
        lines = _lines_of(text)
    env_data, env_origin = _env_overrides(env)
    data = _merge(data, env_data)
    if overrides:
        data = _merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            if loc and loc[-1] == "[key]":  # a refused mapping key: its path is the key's
                loc = loc[:-1]
            if err["type"] == RENAMED_KEY:
                loc = (*loc, str(err.get("ctx", {}).get("old", "?")))  # point at the old key
            dotted = ".".join(loc) or "(root)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif "input" in err and not isinstance(err["input"], (dict, list)):
                msg = f"{msg} (got {err['input']!r})"
            if "secret" in dotted or "password" in dotted or "dsn" in dotted:
                msg = re.sub(r"\(got .*\)$", "(value hidden)", msg)
            where = ""
            for n in range(len(loc), 0, -1):
                if loc[:n] in env_origin:
                    where = f" [from ${env_origin[loc[:n]]}]"
                    break
                if loc[:n] in lines:
                    where = f" [line {lines[loc[:n]]}]"
                    break
            problems.append((dotted + where, msg))
        raise ConfigError(problems, source=source) from exc
