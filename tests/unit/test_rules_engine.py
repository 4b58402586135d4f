"""Pure alert rules: threshold for a duration, absence, rate of change, idempotency."""

from __future__ import annotations

from ioc.config._streams import RuleSpec
from ioc.rules import EntityRules, alert_id

PM25 = RuleSpec(id="pm25_high", kind="threshold", metric="pm25", op=">", value=55, for_s=600,
                severity="critical")
SILENT = RuleSpec(id="silent", kind="absence", for_s=300)
DROP = RuleSpec(id="drop", kind="rate", metric="speed", op="<", value=-20, rate_per_s=60)
T0 = 1_700_000_400.0  # a multiple of 600


def feed(er: EntityRules, rules, series):
    out = []
    for t, v in series:
        out += er.evaluate(rules, t=t, values={"pm25": v, "speed": v}, now=t)
    return out


def test_threshold_must_hold_for_the_duration_then_clears():
    er = EntityRules("air-1")
    # above for 9 min then dips: nothing
    out = feed(er, [PM25], [(T0 + 60 * i, 60) for i in range(10)] + [(T0 + 600, 50)])
    assert out == []
    # above from T0+660 for 10 min: raised at T0+1260, cleared at T0+1500
    out = feed(er, [PM25], [(T0 + 660 + 60 * i, 70) for i in range(11)] + [(T0 + 1500, 40)])
    assert [(a.state, a.raised_at) for a in out] == [("raised", T0 + 1260), ("cleared", T0 + 1260)]
    assert out[0].id == out[1].id == alert_id("pm25_high", "air-1", int(T0 + 600))
    assert out[0].severity == "critical" and out[1].cleared_at == T0 + 1500


def test_replaying_the_same_events_raises_nothing_twice():
    er = EntityRules("air-1")
    series = [(T0 + 60 * i, 80) for i in range(12)]
    first = feed(er, [PM25], series)
    assert [a.state for a in first] == ["raised"]
    assert feed(er, [PM25], series) == []
    back = EntityRules.from_bytes(er.to_bytes())  # after a restart from the changelog
    assert feed(back, [PM25], series) == []


def test_same_data_gives_the_same_alert_id_in_a_fresh_state():
    a = feed(EntityRules("air-1"), [PM25], [(T0 + 60 * i, 80) for i in range(12)])
    b = feed(EntityRules("air-1"), [PM25], [(T0 + 60 * i, 80) for i in range(12)])
    assert a == b


def test_absence_in_wall_clock_and_cleared_by_next_event():
    er = EntityRules("air-9")
    er.evaluate([SILENT], t=T0, values={}, now=5000.0)
    assert er.check_absence([SILENT], 5299.0) == []
    raised = er.check_absence([SILENT], 5300.0)
    assert [a.state for a in raised] == ["raised"]
    assert er.check_absence([SILENT], 5400.0) == []  # not raised twice
    cleared = er.evaluate([SILENT], t=T0 + 400, values={}, now=5400.0)
    assert [(a.id, a.state) for a in cleared] == [(raised[0].id, "cleared")]


def test_rate_of_change_per_minute():
    er = EntityRules("road-1")
    out = feed(er, [DROP], [(T0, 90), (T0 + 60, 85), (T0 + 120, 50), (T0 + 180, 49)])
    assert [(a.state, round(a.value or 0)) for a in out] == [("raised", -35), ("cleared", -1)]


def test_rule_filters_by_prefix():
    rule = RuleSpec(id="p", kind="threshold", metric="pm25", value=1, entity_prefix="air-")
    assert feed(EntityRules("road-1"), [rule], [(T0, 5)]) == []
    assert len(feed(EntityRules("air-1"), [rule], [(T0, 5)])) == 1
