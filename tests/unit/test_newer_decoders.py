"""The decoders of the newer consumers' topics on hostile bytes: a scorecard count
(``<ns>.scorecards``), a view fact (``<ns>.views``) and an operator action
(``<ns>.alerts.actions``) either raise ``InvalidRecord`` or decode to a record that
survives its own encoding (the sink, the leaderboard and every wall replica read what
was decoded, and write it on). The fuzz targets ``scorecard``, ``view`` and ``action`` of
bench/fuzz_decoders.py check the same; these are the hypothesis regression tests.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.errors import InvalidRecord
from ioc.kpi import KpiValue
from ioc.rules import Alert
from ioc.scorecard import LeafCount
from ioc.tilegen import ViewFact
from ioc.wall.workflow import ActionRecord
from tests.fixtures.hostile import hostile_bytes, hostile_json_bytes_for, hostile_json_values

NOW = 1_750_000_000.0
LEAF = orjson.loads(LeafCount("dossiers_online", "year", "2021",
                              ("province", "district", "d1", "all"), 400.0, 1000.0,
                              ("province", "admin_level", "agency", "procedure"), NOW).to_bytes())
ACTION = orjson.loads(ActionRecord.new("ack", "a1", "op1", at=NOW, id="x1", screen="main",
                                       server="w1").to_bytes())


def _dumps(obj: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # a value orjson cannot write (an integer beyond 64 bits, ...)
        return b""


def _leaf_or_invalid(data: bytes) -> LeafCount | None:
    try:
        return LeafCount.from_bytes(data)
    except InvalidRecord:
        return None


@settings(max_examples=300, deadline=None)
@given(st.one_of(hostile_json_bytes_for(LEAF), hostile_bytes(max_size=300),
                 st.builds(lambda name, v: _dumps({**LEAF, name: v}),
                           st.sampled_from(["numerator", "denominator", "at"]),
                           st.one_of(st.sampled_from(["nan", "NaN", "inf", "-Infinity", "1e999",
                                                      "3", "", True, False, None]),
                                     hostile_json_values()))
                 .filter(bool)))
def test_a_scorecard_count_decodes_to_finite_numbers_that_survive_encoding(data: bytes) -> None:
    lf = _leaf_or_invalid(data)
    if lf is None:
        return
    assert all(isinstance(x, float) and math.isfinite(x)
               for x in (lf.numerator, lf.denominator, lf.at)), lf
    assert LeafCount.from_bytes(lf.to_bytes()) == lf


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "Infinity", "1e999", "3", True, None,
                                   [1], {"n": 1}])
@pytest.mark.parametrize("name", ["numerator", "denominator", "at"])
def test_a_count_that_is_not_a_json_number_is_refused(name: str, value: Any) -> None:
    # Found while extending the poison test (session 8): float() took "nan" and "inf"
    # strings and booleans, so a foreign record put NaN into scorecard_counts and the
    # scores. Our stage writes JSON numbers only.
    with pytest.raises(InvalidRecord):
        LeafCount.from_bytes(orjson.dumps({**LEAF, name: value}))


def test_valid_counts_still_decode() -> None:
    assert LeafCount.from_bytes(orjson.dumps({**LEAF, "numerator": 3, "denominator": -2.5}))
    no_at = {k: v for k, v in LEAF.items() if k != "at"}
    assert LeafCount.from_bytes(orjson.dumps(no_at)).at == 0.0


@settings(max_examples=300, deadline=None)
@given(st.one_of(hostile_json_bytes_for(ACTION), hostile_bytes(max_size=300), st.none()))
def test_an_action_record_decodes_to_one_that_survives_encoding(data: bytes | None) -> None:
    try:
        rec = ActionRecord.from_bytes(data)
    except InvalidRecord:
        return
    assert math.isfinite(rec.at)
    assert ActionRecord.from_bytes(rec.to_bytes()) == rec


_KPI = KpiValue("dossiers_online", "all", "day", "2025-06-15", 3.0, 4.0, 75.0, "%").to_bytes()
_ALERT = Alert("a1", "r", "e", None, "warning", "raised", 1, 1.0, None, None, "m", "s").to_bytes()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"kpi", b"alert", b"rollup", b"", b"kpi kpi"]),
       st.one_of(st.integers(-3, 2**70).map(lambda n: str(n).encode()),
                 st.sampled_from([b"", b"1e3", b"0x1", b" 1", b"\xff", b"1_0"])),
       st.sampled_from([b"0", b"7", b"-1", b"99999999999999999999"]),
       st.sampled_from([b"\n", b"\r\n", b""]),
       st.one_of(st.sampled_from([_KPI, _ALERT]), hostile_bytes(max_size=120)))
def test_a_view_fact_decodes_to_one_that_survives_encoding(kind: bytes, part: bytes, off: bytes,
                                                            nl: bytes, value: bytes) -> None:
    try:
        fact = ViewFact.from_bytes(kind + b" " + part + b" " + off + nl + value)
    except InvalidRecord:
        return
    again = ViewFact.from_bytes(fact.to_bytes())
    assert (again.kind, again.partition, again.offset, again.value) == (
        fact.kind, fact.partition, fact.offset, fact.value)
    assert fact.partition >= 0 and fact.offset >= 0
