"""Only ``ioc/kafka/`` imports a Kafka client library; only ``streams/`` imports Faust.

Every ``.py`` file of ``ioc/``, ``streams/`` and ``vision/`` is parsed and each import
statement checked, at any depth (inside functions, ``if TYPE_CHECKING:`` blocks, ``try``
bodies), plus ``importlib.import_module``/``__import__`` calls with a literal name.
Faust's own use of aiokafka is Faust's business: a module that imports ``faust`` is not
taken to import aiokafka.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ioc", "streams", "vision")
KAFKA_CLIENTS = frozenset({"confluent_kafka", "aiokafka", "kafka"})
BOUNDARY = "ioc/kafka/"

#: Files outside ioc/kafka/ allowed to import a Kafka client library, with the reason.
#: Empty: the last ones moved to ioc.kafka.rdkafka / .aio / .kafka_python.
ALLOWED: dict[str, str] = {}

#: Where ``faust`` may be imported: the app factory and the agents.
FAUST_HOME = "streams/"


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, dotted module name)`` of every absolute import in ``tree``."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args:
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            arg = node.args[0]
            if name in ("import_module", "__import__") and isinstance(arg, ast.Constant) \
                    and isinstance(arg.value, str):
                out.append((node.lineno, arg.value))
    return out


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


@functools.cache
def _imports() -> list[tuple[str, int, str]]:
    """``(file relative to the repository, line, top-level module)`` of every import."""
    out = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        out += [(rel, line, name.split(".")[0]) for line, name in _imported_modules(tree)]
    return out


def test_the_walk_sees_every_package_and_the_boundary_itself() -> None:
    found = _imports()
    files = {f for f, _, _ in found}
    assert {p.split("/")[0] for p in files} == set(PACKAGES)
    # ioc/kafka/ itself imports all three libraries: the walk sees nested imports.
    inside = {m for f, _, m in found if f.startswith(BOUNDARY)} & KAFKA_CLIENTS
    assert inside == KAFKA_CLIENTS


def test_only_ioc_kafka_imports_a_kafka_client() -> None:
    bad = [f"{f}:{line}: imports {m} (use ioc.kafka: rdkafka, aio, kafka_python or "
           f"partition_for)" for f, line, m in _imports()
           if m in KAFKA_CLIENTS and not f.startswith(BOUNDARY) and f not in ALLOWED]
    assert not bad, "Kafka client imports outside ioc/kafka/:\n" + "\n".join(bad)


def test_allowed_exceptions_are_still_needed() -> None:
    users = {f for f, _, m in _imports() if m in KAFKA_CLIENTS}
    stale = sorted(set(ALLOWED) - users)
    assert not stale, f"listed in ALLOWED but no longer importing a Kafka client: {stale}"


def test_only_streams_imports_faust() -> None:
    bad = [f"{f}:{line}: imports {m}" for f, line, m in _imports()
           if m == "faust" and not f.startswith(FAUST_HOME)]
    assert not bad, "faust imported outside streams/:\n" + "\n".join(bad)


@pytest.mark.parametrize(("source", "caught"), [
    ("import kafka\n", True),
    ("from kafka.errors import KafkaError\n", True),
    ("def f():\n    if True:\n        from confluent_kafka import Consumer\n", True),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import aiokafka.errors\n", True),
    ("import importlib\nm = importlib.import_module('confluent_kafka')\n", True),
    ("from ioc.kafka.rdkafka import Consumer\n", False),
    ("from .kafka import partition_for\n", False),
    ("import kafkaesque\n", False),
])
def test_the_walk_catches_nested_and_dynamic_imports(source: str, caught: bool) -> None:
    names = {n.split(".")[0] for _, n in _imported_modules(ast.parse(source))}
    assert bool(names & KAFKA_CLIENTS) is caught
