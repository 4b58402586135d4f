"""How large the sink's next batch is (pure: ``next_batch_rows``)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.storage.sink import SinkOptions, next_batch_rows


def test_batches_double_while_behind_up_to_the_drain_size_then_fall_back() -> None:
    o = SinkOptions(batch_rows=5000, drain_batch_rows=20_000)
    sizes = [o.batch_rows]
    for _ in range(4):
        sizes.append(next_batch_rows(sizes[-1], filled=True, options=o))
    assert sizes == [5000, 10_000, 20_000, 20_000, 20_000]
    assert next_batch_rows(20_000, filled=False, options=o) == 5000


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 100_000), st.integers(1, 100_000), st.integers(1, 200_000), st.booleans())
def test_next_batch_stays_between_batch_rows_and_the_larger_bound(
        batch: int, drain: int, cap: int, filled: bool) -> None:
    o = SinkOptions(batch_rows=batch, drain_batch_rows=drain)
    got = next_batch_rows(cap, filled=filled, options=o)
    assert batch <= got <= max(batch, drain)
    if not filled:
        assert got == batch
