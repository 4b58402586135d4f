"""Calendar periods of scorecards: month '2021-03', quarter '2021-Q1', year '2021'.

Pure. Periods are calendar periods in the deployment's time zone
(``streams.timezone``), like those of the ratio KPIs.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["PERIODS", "last_day", "period_bounds", "period_key", "previous_period", "year_of"]

PERIODS = ("month", "quarter", "year")


def _check(period: str) -> None:
    if period not in PERIODS:
        raise ValueError(f"period must be one of {list(PERIODS)}, got {period!r}")


def period_key(t: float, period: str, tz: ZoneInfo) -> str:
    """The period holding unix time ``t`` in ``tz``: '2021-03', '2021-Q1' or '2021'.

    Raises:
        ValueError: an unknown period kind.
    """
    _check(period)
    d = datetime.fromtimestamp(t, tz)
    if period == "month":
        return f"{d.year:04d}-{d.month:02d}"
    if period == "quarter":
        return f"{d.year:04d}-Q{(d.month - 1) // 3 + 1}"
    return f"{d.year:04d}"


def _parse(period: str, key: str) -> tuple[int, int]:
    """(year, month or quarter number; 0 for a year)."""
    _check(period)
    try:
        if period == "year":
            if len(key) != 4:
                raise ValueError
            return int(key), 0
        y, rest = key.split("-", 1)
        if period == "quarter":
            if not rest.startswith("Q"):
                raise ValueError
            n = int(rest[1:])
            if not 1 <= n <= 4:
                raise ValueError
        else:
            n = int(rest)
            if not 1 <= n <= 12:
                raise ValueError
        return int(y), n
    except ValueError:
        example = {"month": "2021-03", "quarter": "2021-Q1", "year": "2021"}[period]
        raise ValueError(f"a {period} key looks like {example!r}, got {key!r}") from None


def previous_period(period: str, key: str) -> str:
    """The period before ``key``: '2021-01' -> '2020-12', '2021-Q1' -> '2020-Q4', '2021' -> '2020'.

    Raises:
        ValueError: a key that is not of ``period``'s form.
    """
    y, n = _parse(period, key)
    if period == "year":
        return f"{y - 1:04d}"
    if period == "quarter":
        return f"{y - 1:04d}-Q4" if n == 1 else f"{y:04d}-Q{n - 1}"
    return f"{y - 1:04d}-12" if n == 1 else f"{y:04d}-{n - 1:02d}"


def period_bounds(period: str, key: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) of the period in ``tz``.

    Raises:
        ValueError: a key that is not of ``period``'s form.
    """
    y, n = _parse(period, key)
    if period == "year":
        return datetime(y, 1, 1, tzinfo=tz), datetime(y + 1, 1, 1, tzinfo=tz)
    first = n if period == "month" else 3 * (n - 1) + 1
    months = 1 if period == "month" else 3
    start = datetime(y, first, 1, tzinfo=tz)
    end_m = first + months
    end = datetime(y + (end_m - 1) // 12, (end_m - 1) % 12 + 1, 1, tzinfo=tz)
    return start, end


def year_of(key: str) -> str:
    """The year of any period key ('2021-Q3' -> '2021')."""
    return key[:4]


def last_day(period: str, key: str, tz: ZoneInfo) -> datetime:
    """The period's last day (its end minus one day), for 'from/to' dates."""
    return period_bounds(period, key, tz)[1] - timedelta(days=1)
