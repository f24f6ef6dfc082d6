"""Delivery windows: a daily window in a named time zone (wrapping past midnight, across DST changes), and pause."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from daemon.targets.settings import Window

LA = "America/Los_Angeles"


@pytest.mark.parametrize(("utc", "opens"), [
    ("2026-12-01T08:30:00", None),  # 00:30 in Los Angeles (PST, UTC-8): inside 00:00-02:00
    ("2026-12-01T09:59:00", None),  # 01:59: still inside
    ("2026-12-01T10:00:00", "2026-12-02T08:00:00"),  # 02:00: closed until tomorrow's 00:00 PST
    ("2026-12-01T07:59:00", "2026-12-01T08:00:00"),  # 23:59 the day before: opens in a minute
    ("2026-07-01T07:30:00", None),  # 00:30 PDT (UTC-7) in summer
    ("2026-07-01T06:30:00", "2026-07-01T07:00:00"),  # 23:30 PDT: opens at 00:00 PDT
])  # fmt: skip
def test_a_daily_window_in_a_time_zone(utc: str, opens: str | None) -> None:
    window = Window(daily="00:00-02:00", time_zone=LA)
    found = window.next_open(datetime.fromisoformat(utc).replace(tzinfo=UTC))
    expected = None if opens is None else datetime.fromisoformat(opens).replace(tzinfo=UTC)
    assert found == expected


def test_a_window_may_wrap_past_midnight() -> None:
    window = Window(daily="22:00-02:00")  # UTC
    assert window.next_open(datetime(2026, 12, 1, 23, 0, tzinfo=UTC)) is None
    assert window.next_open(datetime(2026, 12, 2, 1, 0, tzinfo=UTC)) is None
    assert window.next_open(datetime(2026, 12, 2, 12, 0, tzinfo=UTC)) == datetime(2026, 12, 2, 22, 0, tzinfo=UTC)


def test_no_window_is_always_open_and_a_paused_target_never() -> None:
    assert Window().next_open(datetime(2026, 12, 1, tzinfo=UTC)) is None
    paused = Window(daily="00:00-02:00", paused=True).next_open(datetime(2026, 12, 1, 1, tzinfo=UTC))
    assert paused is not None and paused.year == 9999
