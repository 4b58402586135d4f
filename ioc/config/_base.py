"""Base model for every settings section, and YAML read in the shape of the settings.

YAML 1.1 (PyYAML) turns unquoted ``on``/``off``/``yes``/``no``/``y``/``n`` into booleans
and ``12:30`` into 750, so a string or ``Literal`` setting (``database.timescaledb: on``,
``wall.compression: off``) would receive ``True``/``False`` and be refused. The loader
here reads a YAML node *in the shape of the field it goes to*: a field typed as text
(``str``, ``Literal`` of strings, ``SecretStr``, ``Path``, and lists/dicts of those)
receives the literal text that was written, every mapping key is text, and only the
YAML 1.2 words ``true``/``false`` are booleans. A ``bool`` field still accepts
``on``/``off``/``yes``/``no`` because pydantic reads those words as booleans.
"""

from __future__ import annotations

import re
import types
from pathlib import PurePath
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, SecretStr, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "RENAMED_KEY",
    "Section",
    "SettingsLoader",
    "construct_as",
    "is_text_type",
    "load_yaml_as",
    "options_of",
]


RENAMED_KEY = "renamed_key"
"""Pydantic error type of a key that a section no longer reads (``ctx``: old, new, why)."""


class Section(BaseModel):
    """A frozen settings node; unknown keys are errors, not silently ignored.

    A section that replaced keys lists them in ``renamed_keys`` (old key -> (new key,
    why)). A document using an old key is refused with a ``renamed_key`` error whose
    message names the old and the new key; ``load_settings`` reports it at the dotted
    path of the old key (and its line), so ``ioc config check`` points at it. The old
    value is never converted silently: its meaning changed (frames became seconds).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    renamed_keys: ClassVar[dict[str, tuple[str, str]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _refuse_renamed_keys(cls, data: Any) -> Any:
        if not cls.renamed_keys or not isinstance(data, dict):
            return data
        old = [k for k in cls.renamed_keys if k in data]
        if not old:
            return data
        new, why = cls.renamed_keys[old[0]]
        also = "".join(f"; also {k!r} -> {cls.renamed_keys[k][0]!r}" for k in old[1:])
        raise PydanticCustomError(
            RENAMED_KEY,
            "key '{old}' is no longer read: use '{new}' ({why}){also}",
            {"old": old[0], "new": new, "why": why, "also": also},
        )


class SettingsLoader(yaml.SafeLoader):
    """SafeLoader whose implicit booleans are the YAML 1.2 ones: true/false only."""


# Drop the YAML 1.1 bool resolver (yes/no/on/off/y/n) and put back true/false alone.
SettingsLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SettingsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))

_NULL = "tag:yaml.org,2002:null"
_NONE = type(None)


def options_of(ann: Any) -> list[Any]:
    """The alternatives of a (possibly Optional/Union/Annotated) annotation, None removed."""
    if get_origin(ann) is Annotated:
        ann = get_args(ann)[0]
    if get_origin(ann) in (Union, types.UnionType):
        return [a for x in get_args(ann) for a in options_of(x) if a is not _NONE]
    return [] if ann is _NONE else [ann]


def _is_text(ann: Any) -> bool:
    if get_origin(ann) is Literal:
        return all(isinstance(v, str) for v in get_args(ann))
    return isinstance(ann, type) and issubclass(ann, (str, PurePath, SecretStr))


def is_text_type(ann: Any) -> bool:
    """True when every alternative of ``ann`` (None aside) is text-like."""
    opts = options_of(ann)
    return bool(opts) and all(_is_text(a) for a in opts)


def _model_field(model: type[BaseModel], key: str) -> Any:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field.annotation
    return None


def construct_as(loader: yaml.SafeLoader, node: yaml.Node, ann: Any) -> Any:
    """Build the Python value of ``node`` for a field annotated ``ann`` (None: unknown).

    Text-typed scalars keep their written text (nulls stay None); mapping keys are
    always text; anything else is built by ``loader`` as plain YAML.
    """
    opts = options_of(ann) if ann is not None else []
    if isinstance(node, yaml.ScalarNode):
        if node.tag != _NULL and opts and all(_is_text(a) for a in opts):
            return node.value
        return loader.construct_object(node, deep=True)
    one = opts[0] if len(opts) == 1 else None
    origin = get_origin(one)
    if isinstance(node, yaml.SequenceNode):
        args = get_args(one)
        if origin in (list, set, frozenset) or (origin is tuple and len(args) == 2
                                                and args[1] is Ellipsis):
            return [construct_as(loader, item, args[0] if args else None) for item in node.value]
        if origin is tuple and args:
            return [construct_as(loader, item, args[i] if i < len(args) else None)
                    for i, item in enumerate(node.value)]
        return [construct_as(loader, item, None) for item in node.value]
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # merge keys (<<) into the node
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = (key_node.value if isinstance(key_node, yaml.ScalarNode)
                   else loader.construct_object(key_node, deep=True))
            if isinstance(one, type) and issubclass(one, BaseModel):
                value_ann = _model_field(one, str(key))
            elif origin is dict and len(get_args(one)) == 2:
                value_ann = get_args(one)[1]
            else:
                value_ann = None
            out[key] = construct_as(loader, value_node, value_ann)
        return out
    return loader.construct_object(node, deep=True)


def load_yaml_as(text: str, ann: Any) -> Any:
    """Parse one YAML document and build it for ``ann`` (see :func:`construct_as`).

    Raises:
        yaml.YAMLError: the text is not valid YAML (with its mark).
    """
    loader = SettingsLoader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else construct_as(loader, node, ann)
    finally:
        loader.dispose()
