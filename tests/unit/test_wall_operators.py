"""The operator side of the wall without I/O: roles, workflow, alerts, presets, pop-ups, limits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.config import load_settings
from ioc.config._wall import GridLayout, ScreenLayout, TilePlacement, WallSettings
from ioc.errors import ConfigError, InvalidRecord
from ioc.wall.alerts import AlertIndex, AlertInfo, alert_tile_id
from ioc.wall.auth import TokenSigner
from ioc.wall.desk import OperatorDesk
from ioc.wall.exceptions import CloseCode, TokenError
from ioc.wall.limits import RequestBucket
from ioc.wall.presets import DEFAULT, screen_view
from ioc.wall.protocol import Rejected, Request
from ioc.wall.workflow import (
    MAX_COMMENTS,
    ActionRecord,
    AlertWorkflow,
    WorkflowBook,
    apply,
    check,
)
from tests.fixtures.hostile import hostile_json_bytes, mutated_json_objects

KEY = b"unit-test-wall-key-0123456789"
RIVER = "sensor:river-01:level"


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _signed(claims: dict[str, Any]) -> str:
    body = _b64(orjson.dumps(claims))
    return f"{body}.{_b64(hmac.new(KEY, body.encode(), hashlib.sha256).digest())}"


# -- tokens ------------------------------------------------------------------------------


def test_operator_tokens_carry_role_and_name() -> None:
    signer = TokenSigner(KEY)
    c = signer.verify(signer.issue(["ops"], 60, subject="alice", role="operator"), "ops")
    assert (c.role, c.operator, c.subject) == ("operator", "alice", "alice")
    v = signer.verify(signer.issue(["ops"], 60, subject="wall-3"), "ops")
    assert (v.role, v.operator) == ("viewer", None)


def test_old_tokens_without_role_are_viewers() -> None:
    # exactly the claims tokens had before roles
    tok = _signed({"scr": ["main"], "iat": 1, "exp": 2**40, "sub": "alice"})
    c = TokenSigner(KEY).verify(tok, "main")
    assert c.role == "viewer" and c.operator is None
    # and a viewer token issued now has the same claims (no role key)
    new = TokenSigner(KEY).issue(["main"], 60)
    assert "role" not in orjson.loads(base64.urlsafe_b64decode(new.split(".")[0] + "=="))


@pytest.mark.parametrize("claims", [
    {"scr": ["ops"], "exp": 2**40, "sub": "x", "role": "admin"},
    {"scr": ["ops"], "exp": 2**40, "sub": "", "role": "operator"},
    {"scr": ["ops"], "exp": 2**40, "sub": "   ", "role": "operator"},
    {"scr": ["ops"], "exp": 2**40, "role": "operator"},
    {"scr": ["ops"], "exp": 2**40, "sub": "x" * 65, "role": "operator"},
    {"scr": ["ops"], "exp": 2**40, "sub": "x", "role": ["operator"]},
])
def test_bad_roles_are_refused_as_unreadable(claims: dict[str, Any]) -> None:
    with pytest.raises(TokenError) as e:
        TokenSigner(KEY).verify(_signed(claims), "ops")
    assert e.value.code == CloseCode.UNAUTHORIZED and "claims" in e.value.reason


def test_issuing_an_operator_token_needs_a_name() -> None:
    with pytest.raises(ValueError, match="name"):
        TokenSigner(KEY).issue(["ops"], 60, role="operator")
    with pytest.raises(ValueError, match="role"):
        TokenSigner(KEY).issue(["ops"], 60, subject="a", role="root")  # type: ignore[arg-type]


# -- workflow ----------------------------------------------------------------------------


def rec(action: str, by: str = "alice", *, at: float = 1.0, alert: str = "a1",
        **kw: Any) -> ActionRecord:
    return ActionRecord.new(action, alert, by, at=at, **kw)


def test_workflow_transitions() -> None:
    st0 = None
    assert check(st0, "ack") is None
    s1 = apply(st0, rec("ack", at=10))
    assert (s1.acked_by, s1.acked_at) == ("alice", 10)
    assert "already acknowledged by alice" in (check(s1, "ack") or "")
    assert apply(s1, rec("ack", "bob", at=11)) == s1  # first ack wins, even when folded
    s2 = apply(s1, rec("assign", to="bob", at=12))
    assert s2.assigned_to == "bob" and apply(s2, rec("assign", to="carol")).assigned_to == "carol"
    assert check(s2, "assign", to="") is not None
    s3 = apply(s2, rec("comment", "bob", text="on my way", at=13))
    assert [(c.by, c.text) for c in s3.comments] == [("bob", "on my way")]
    assert check(s3, "comment", text="x" * 501) is not None and check(s3, "comment", text=" ")
    s4 = apply(s3, rec("close", "bob", at=14))
    assert s4.closed and s4.closed_by == "bob" and s4.acked_by == "alice"
    assert "closed" in (check(s4, "ack") or "") and "closed" in (check(s4, "assign", to="x") or "")
    assert check(s4, "comment", text="done") is None
    # a close without an ack acknowledges too, by the closer
    c = apply(None, rec("close", "carol", at=5))
    assert (c.acked_by, c.acked_at, c.closed_by) == ("carol", 5, "carol")


_records = st.builds(
    lambda action, by, at, to, text, alert: ActionRecord.new(action, alert, by, at=at, to=to,
                                                             text=text),
    st.sampled_from(["ack", "assign", "comment", "close"]), st.sampled_from(["alice", "bob"]),
    st.floats(0, 1e10), st.one_of(st.none(), st.sampled_from(["", "carol", "dave"])),
    st.one_of(st.none(), st.text(max_size=600)), st.sampled_from(["a1", "a2", "a3"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(_records, max_size=40))
def test_folding_is_total_deterministic_and_keeps_its_invariants(recs: list[ActionRecord]) -> None:
    one, two = WorkflowBook(), WorkflowBook()
    for r in recs:
        one.fold(r)
    for r in recs + recs:  # the same records read twice change nothing
        two.fold(r)
    assert one.states == two.states
    assert two.duplicates == len(recs)
    for aid, s in one.states.items():
        if s.closed:
            assert s.acked and s.closed_by is not None
        assert len(s.comments) <= MAX_COMMENTS
        acks = [r for r in recs if r.alert == aid and r.action in ("ack", "close")]
        if acks:  # the first ack or close decides who acknowledged
            assert s.acked_by == acks[0].by
        # whatever is folded round-trips through the wire format
        assert all(ActionRecord.from_bytes(r.to_bytes()) == r for r in recs)
        assert orjson.dumps(s.as_message())


def test_book_evicts_closed_states_first() -> None:
    book = WorkflowBook(max_alerts=2)
    book.fold(rec("close", alert="a1"))
    book.fold(rec("ack", alert="a2"))
    book.fold(rec("ack", alert="a3"))
    assert list(book.states) == ["a2", "a3"] and book.evicted == 1


_GOOD_RECORD = orjson.loads(ActionRecord.new("assign", "a1", "alice", at=1.0, to="bob").to_bytes())


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.none(), hostile_json_bytes(),
                 mutated_json_objects(_GOOD_RECORD).map(
                     lambda d: json.dumps(d, default=str).encode(errors="surrogatepass"))))
def test_action_records_decode_or_raise_invalid_record(data: bytes | None) -> None:
    try:
        r = ActionRecord.from_bytes(data)
    except InvalidRecord:
        return
    assert r.action in ("ack", "assign", "comment", "close", "preset") and r.id and r.by
    apply(None, r)  # whatever decodes, folds


# -- alerts and the tiles they pop up ------------------------------------------------------


def item(aid: str, *, state: str = "raised", severity: str = "critical", rule: str = "river_high",
         entity: str = "river-01", metric: str | None = "level", at: float = 1.0) -> dict[str, Any]:
    return {"id": aid, "rule": rule, "entity": entity, "metric": metric, "severity": severity,
            "state": state, "raised_at": at, "message": "m"}


def test_alert_index_merges_tiles_and_cleared_wins() -> None:
    idx = AlertIndex()
    assert idx.update_tile("alerts:all", {"items": [item("a1"), {"bad": 1}, "x", item("a2")]}) \
        == {"a1", "a2"}
    assert idx.update_tile("alerts:river", {"items": [item("a1", state="cleared")]}) == {"a1"}
    a1 = idx.get("a1")
    assert a1 is not None and not a1.raised
    assert idx.update_tile("alerts:all", {"items": [item("a1")]}) == {"a2"}
    assert idx.remove_tile("alerts:river") == {"a1"}
    a1 = idx.get("a1")
    assert a1 is not None and a1.raised and idx.get("a2") is None
    assert idx.update_tile("alerts:all", {"items": "nope"}) == {"a1"} and len(idx) == 0


@pytest.mark.parametrize("entity,metric,tile,want", [
    ("river-01", "level", None, RIVER),
    ("sensor:river-01", "level", None, RIVER),
    ("north-gate", None, None, "camera:north-gate"),
    ("camera:north-gate", None, None, "camera:north-gate"),
    ("river-01", None, None, RIVER),                   # the first sensor tile of the entity
    ("river-01", "flow", "camera:north-gate", "camera:north-gate"),  # the item's own tile
    ("nowhere", "level", None, None),
])
def test_alert_tile_mapping(entity: str, metric: str | None, tile: str | None,
                            want: str | None) -> None:
    a = AlertInfo("a", "r", entity, metric, "critical", "raised", 0.0, tile)
    assert alert_tile_id(a, {RIVER, "camera:north-gate", "alerts:all"}) == want


# -- presets and pop-ups ------------------------------------------------------------------


def p(tile: str, col: int = 1, row: int = 1) -> TilePlacement:
    return TilePlacement(tile=tile, col=col, row=row)


def screen(**kw: Any) -> ScreenLayout:
    return ScreenLayout.model_validate({
        "columns": 2, "rows": 1,
        "tiles": [p("alerts:all").model_dump(), p("kpi:a", 2).model_dump()],
        "presets": {"flood": {"columns": 1, "rows": 1, "tiles": [p(RIVER).model_dump()]},
                    "quiet": {"columns": 1, "rows": 1, "tiles": [p("kpi:a").model_dump()]}},
        "preset_rules": [{"id": "floods", "preset": "flood", "rule": "river_high",
                          "severity": "warning"},
                         {"id": "any_critical", "preset": "quiet", "severity": "critical"}],
        "popups": {"enabled": True, "max_open": 1}, **kw})


def infos(*items: dict[str, Any]) -> list[AlertInfo]:
    idx = AlertIndex()
    idx.update_tile("alerts:all", {"items": list(items)})
    return list(idx.alerts())


def view(layout: ScreenLayout, alerts: list[AlertInfo], states: dict[str, AlertWorkflow] | None = None,
         **kw: Any):  # type: ignore[no-untyped-def]
    return screen_view(layout, alerts, (states or {}).get, {RIVER, "camera:x"}, **kw)


def test_preset_rules_in_order_and_back_when_cleared() -> None:
    lay = screen()
    assert view(lay, []).preset is None
    v = view(lay, infos(item("a1", severity="warning")))
    assert (v.preset, v.by) == ("flood", "rule:floods")
    v = view(lay, infos(item("a2", rule="other", entity="x", metric=None)))
    assert (v.preset, v.by) == ("quiet", "rule:any_critical")
    v = view(lay, infos(item("a1", severity="info")))  # below the rule's severity
    assert v.preset is None
    assert view(lay, infos(item("a1", state="cleared"))).preset is None
    closed = {"a1": apply(None, rec("close", alert="a1"))}
    assert view(lay, infos(item("a1")), closed).preset is None
    acked = {"a1": apply(None, rec("ack", alert="a1"))}
    assert view(lay, infos(item("a1")), acked).preset == "flood"  # an ack does not switch back


def test_entity_prefix_matches_with_or_without_a_tile_head() -> None:
    lay = screen(preset_rules=[{"id": "r", "preset": "flood", "entity_prefix": "river-"}])
    assert view(lay, infos(item("a", entity="sensor:river-01"))).preset == "flood"
    assert view(lay, infos(item("a", entity="river-01"))).preset == "flood"
    assert view(lay, infos(item("a", entity="kpi:river-01"))).preset is None


def test_operator_choice_wins_and_default_pins() -> None:
    lay = screen()
    alerts = infos(item("a1"))
    v = view(lay, alerts, override=("quiet", "bob"))
    assert (v.preset, v.by) == ("quiet", "operator:bob")
    v = view(lay, alerts, override=(DEFAULT, "bob"))
    assert (v.preset, v.by) == (None, "operator:bob")


def test_popups_until_acknowledged_newest_first_bounded() -> None:
    lay = screen()
    alerts = infos(item("old", at=1), item("new", entity="x", metric=None, at=2),
                   item("warn", severity="warning", at=3))
    v = view(lay, alerts)
    assert [(x.alert, x.tile) for x in v.popups] == [("new", "camera:x")]
    acked = {"new": apply(None, rec("ack", alert="new"))}
    assert [x.alert for x in view(lay, alerts, acked).popups] == ["old"]
    assert view(screen(popups={"enabled": False}), alerts).popups == ()
    nowhere = infos(item("a", entity="nowhere", metric=None))
    assert view(lay, nowhere).popups == ()


def test_preset_settings_are_validated_with_their_path() -> None:
    bad = screen().model_dump(mode="json")
    bad["preset_rules"][0]["preset"] = "floods"
    with pytest.raises(ConfigError) as e:
        load_settings(env={}, overrides={"wall": {"screens": {"ops": bad}}})
    assert any(k.startswith("wall.screens.ops") and "preset_rules.0.preset" in v
               for k, v in e.value.problems), e.value.problems
    bad = screen().model_dump(mode="json")
    bad["presets"]["flood"]["tiles"][0]["col"] = 5
    with pytest.raises(ConfigError) as e:
        load_settings(env={}, overrides={"wall": {"screens": {"ops": bad}}})
    assert any("wall.screens.ops.presets.flood" in k for k, _ in e.value.problems), \
        e.value.problems
    with pytest.raises(ValueError, match="default"):
        screen(presets={"default": GridLayout(columns=1, rows=1)}, preset_rules=[])


def test_presets_do_not_change_the_default_layout_hash() -> None:
    plain = ScreenLayout(columns=2, rows=1, tiles=[p("alerts:all"), p("kpi:a", 2)])
    assert screen().layout_hash() == plain.layout_hash()
    assert set(screen().grid_dump()) == {"title", "columns", "rows", "tiles"}


# -- the desk: who may do what -------------------------------------------------------------


def test_desk_authorises_and_folds() -> None:
    cfg = WallSettings(secret="x" * 16, screens={"ops": screen()})  # type: ignore[arg-type]
    desk = OperatorDesk(cfg)
    ch = desk.on_alert_tile("alerts:all", {"items": [item("a1")]})
    assert ch.screens["ops"][1].preset == "flood"
    signer = TokenSigner(KEY)
    viewer = signer.verify(signer.issue(["ops"], 60), "ops")
    alice = signer.verify(signer.issue(["ops"], 60, subject="alice", role="operator"), "ops")
    ack = Request(1, "action", action="ack", alert="a1")
    r = desk.authorise(viewer, "ops", ack, now=5)
    assert isinstance(r, Rejected) and r.error == "forbidden"
    r = desk.authorise(alice, "ops", Request(2, "action", action="ack", alert="zz"), now=5)
    assert isinstance(r, Rejected) and r.error == "unknown_alert"
    r = desk.authorise(alice, "ops", Request(3, "preset", preset="nope"), now=5)
    assert isinstance(r, Rejected) and r.error == "unknown_preset"
    out = desk.authorise(alice, "ops", ack, now=5)
    assert isinstance(out, ActionRecord) and (out.by, out.at) == ("alice", 5)
    ch = desk.fold(out)
    assert ch.alert_states["a1"].acked_by == "alice"
    assert ch.screens["ops"][1].popups == ()  # acknowledged: the pop-up ends
    again = desk.authorise(alice, "ops", ack, now=6)
    assert isinstance(again, Rejected) and again.error == "invalid"
    pre = desk.authorise(alice, "ops", Request(4, "preset", preset="quiet"), now=7)
    assert isinstance(pre, ActionRecord)
    assert desk.fold(pre).screens["ops"][1].by == "operator:alice"
    back = desk.authorise(alice, "ops", Request(5, "preset", preset=None), now=8)
    assert isinstance(back, ActionRecord)
    assert desk.fold(back).screens["ops"][1].by == "rule:floods"


def test_request_bucket() -> None:
    b = RequestBucket(2, 3)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.refused_in_a_row == 1 and not b.take(0.1)
    assert b.take(0.6) and b.refused_in_a_row == 0  # 0.5 s at 2/s: one more
    assert not b.take(0.6)


def test_camera_overlays_are_normalized_zones_and_lines() -> None:
    from ioc.wall.server import camera_overlays

    s = load_settings(env={}, overrides={"cameras": {"cameras": [
        {"id": "gate", "url": "clip.avi", "analytics": {
            "zones": [{"name": "road", "polygon": [[0, 0.5], [1, 0.5], [1, 1]]}],
            "lines": [{"name": "in", "a": [0.1, 0.6], "b": [0.9, 0.6]}]}},
        {"id": "plain", "url": "other.avi"}]}})
    ov = camera_overlays(s)
    assert ov["camera:gate"] == {
        "zones": [{"name": "road", "polygon": [[0, 0.5], [1, 0.5], [1, 1]]}],
        "lines": [{"name": "in", "a": [0.1, 0.6], "b": [0.9, 0.6], "direction": "left_to_right"}]}
    assert ov["camera:plain"] == {"zones": [], "lines": []}
    assert orjson.loads(orjson.dumps(ov)) == ov
