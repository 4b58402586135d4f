"""A retried operator action stored once (issue #17): the client's idempotency key.

After an ``unavailable`` answer the action may have been stored after all; a client that
retries it with the same ``idempotency_key`` makes the same record (same id), which the
fold and the audit table take once. Pure: the desk, the book, the protocol, the rows.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.config._wall import ScreenLayout, TilePlacement, WallSettings
from ioc.wall._storage import action_rows
from ioc.wall.auth import TokenSigner
from ioc.wall.desk import OperatorDesk
from ioc.wall.protocol import Rejected, Request, parse_request
from ioc.wall.workflow import ActionRecord, WorkflowBook

KEY = b"unit-test-wall-key-0123456789"
SIGNER = TokenSigner(KEY)
ALICE = SIGNER.verify(SIGNER.issue(["ops"], 60, subject="alice", role="operator"), "ops")
BOB = SIGNER.verify(SIGNER.issue(["ops"], 60, subject="bob", role="operator"), "ops")


def desk() -> OperatorDesk:
    d = OperatorDesk(WallSettings(secret="x" * 16, screens={"ops": ScreenLayout(  # type: ignore[arg-type]
        columns=1, rows=1, tiles=[TilePlacement(tile="alerts:all", col=1, row=1)])}))
    d.on_alert_tile("alerts:all", {"items": [{
        "id": "a1", "rule": "r", "entity": "river-01", "severity": "critical",
        "state": "raised", "raised_at": 1.0, "message": "m"}]})
    return d


def comment(key: str | None, text: str = "crew on the way", rid: object = 1) -> Request:
    return Request(rid, "action", action="comment", alert="a1", text=text, idempotency_key=key)


def test_the_protocol_reads_an_optional_idempotency_key():
    base = {"type": "action", "id": 7, "action": "comment", "alert": "a1", "text": "t"}
    r = parse_request(base)
    assert isinstance(r, Request) and r.idempotency_key is None  # older clients: none
    r = parse_request({**base, "idempotency_key": "k-0123456789abcdef"})
    assert isinstance(r, Request) and r.idempotency_key == "k-0123456789abcdef"
    for bad in ("short", "x" * 65, "has space in it", 12345678, ["k-0123456789"]):
        r = parse_request({**base, "idempotency_key": bad})
        assert isinstance(r, Rejected) and r.error == "invalid", bad
        assert "action.idempotency_key" in r.detail


def test_a_comment_retried_after_unavailable_is_stored_once():
    d = desk()
    first = d.authorise(ALICE, "ops", comment("k-retry-0001"), now=10)
    assert isinstance(first, ActionRecord)
    # 'unavailable': Kafka stored it after all, the page did not hear. The record comes
    # back on the actions topic and is folded; the page retries with the same key.
    assert d.fold(first).alert_states["a1"].comments[0].text == "crew on the way"
    retry = d.authorise(ALICE, "ops", comment("k-retry-0001", rid=2), now=16)
    assert isinstance(retry, ActionRecord) and retry.id == first.id
    assert not d.fold(retry)  # nothing changed: no alert_state goes out
    assert [c.text for c in d.book.get("a1").comments] == ["crew on the way"]  # type: ignore[union-attr]
    assert d.book.duplicates == 1
    # the audit table: both records are one row (the action id is its primary key)
    rows = [action_rows(rec.key, rec.to_bytes(), [])[0] for rec in (first, retry)]
    assert len({r[0] for r in rows}) == 1
    # a retry whose first try was *not* stored is stored now, once
    lost = d.authorise(ALICE, "ops", comment("k-retry-0002", "second"), now=20)
    again = d.authorise(ALICE, "ops", comment("k-retry-0002", "second", rid=3), now=26)
    assert isinstance(lost, ActionRecord) and isinstance(again, ActionRecord)
    assert lost.id == again.id
    d.fold(again)
    d.fold(lost)  # a late duplicate (both tries were stored, in either order)
    assert [c.text for c in d.book.get("a1").comments] == ["crew on the way", "second"]  # type: ignore[union-attr]


def test_a_retried_ack_is_ok_not_already_acknowledged():
    d = desk()
    ack = Request(1, "action", action="ack", alert="a1", idempotency_key="k-ack-00001")
    rec = d.authorise(ALICE, "ops", ack, now=10)
    assert isinstance(rec, ActionRecord)
    d.fold(rec)
    retry = d.authorise(ALICE, "ops", ack, now=12)
    assert isinstance(retry, ActionRecord) and retry.id == rec.id  # ok, and changes nothing
    assert not d.fold(retry)
    # bob's ack with the same key is another action, refused as before
    r = d.authorise(BOB, "ops", ack, now=13)
    assert isinstance(r, Rejected) and r.error == "invalid" and "alice" in r.detail
    # without a key a second ack is refused as before
    r = d.authorise(ALICE, "ops", Request(2, "action", action="ack", alert="a1"), now=14)
    assert isinstance(r, Rejected) and r.error == "invalid"


def test_without_a_key_two_identical_comments_are_two():
    d = desk()
    a = d.authorise(ALICE, "ops", comment(None), now=1)
    b = d.authorise(ALICE, "ops", comment(None), now=2)
    assert isinstance(a, ActionRecord) and isinstance(b, ActionRecord) and a.id != b.id
    d.fold(a)
    d.fold(b)
    assert len(d.book.get("a1").comments) == 2  # type: ignore[union-attr]


keys = st.text(alphabet="abcdef0123456789-", min_size=8, max_size=64)


@settings(max_examples=200, deadline=None)
@given(k1=keys, k2=keys, who=st.sampled_from(["alice", "bob"]), t1=st.sampled_from(["a", "b"]),
       t2=st.sampled_from(["a", "b"]), action=st.sampled_from(["comment", "assign"]))
def test_retry_ids_are_equal_exactly_for_the_same_action(k1, k2, who, t1, t2, action):
    def rid(k: str, by: str, t: str) -> str:
        return ActionRecord.retry_id(k, by, action, "a1", t if action == "assign" else None,
                                     t if action == "comment" else None)
    assert (rid(k1, who, t1) == rid(k2, who, t2)) == (k1 == k2 and t1 == t2)
    assert rid(k1, "alice", t1) != rid(k1, "bob", t1)
    got = rid(k1, who, t1)
    assert len(got) <= 64 and ActionRecord.from_bytes(ActionRecord.new(
        action, "a1", who, at=1.0, id=got, to=t1, text=t1).to_bytes()).id == got


@settings(max_examples=100, deadline=None)
@given(order=st.permutations(range(6)))
def test_the_fold_takes_each_id_once_in_any_order(order):
    recs = [ActionRecord.new("comment", "a1", "alice", at=float(i), id=f"id-{i % 3}",
                             text=f"c{i % 3}") for i in range(6)]
    book = WorkflowBook()
    for i in order:
        book.fold(recs[i])
    st_ = book.get("a1")
    assert st_ is not None and len(st_.comments) == 3 and book.duplicates == 3
