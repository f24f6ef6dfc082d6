"""The defender of several replicas: other replicas' hits counted at their own time, their bans taken when they end
later, this replica's own hits never counted twice. Expected values follow the rules in daemon/sftp/defender.py's
docstring (threshold within the window, ban length doubling for a repeat, the later ban kept), worked by hand.

The trading runs against a real SQLite store (two handles on one file, as two replicas on one database); the
clock is moved by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.sftp.defender import Ban, Defender, DefenderOptions, Hit
from daemon.sftp.events import Reporter
from daemon.sftp.events import DEFENDER_SYNC_FAILED
from daemon.sftp.shared import DefenderSync
from daemon.store import Store

from .test_defender import Clock

IP = "192.0.2.7"


def test_another_replicas_hits_count_toward_the_threshold() -> None:
    clock = Clock()
    defender = Defender(DefenderOptions(threshold=15, observation_seconds=60, ban_seconds=100), clock, shared=True)
    for _ in range(10):
        assert defender.score(IP, 1) is None
    for _ in range(4):
        assert defender.merge_hit(Hit(IP, clock.now - 5, 1)) is None  # 10 + 4 = 14, under 15
    assert defender.merge_hit(Hit(IP, clock.now - 61, 1)) is None  # outside the 60 s window: counts nothing

    ban = defender.merge_hit(Hit(IP, clock.now - 5, 1))  # 15

    assert ban is not None and (ban.until, ban.seconds, ban.count) == (clock.now + 100, 100, 1)
    assert defender.banned_until(IP) == clock.now + 100


def test_a_remote_hit_from_before_a_ban_began_is_spent_on_it() -> None:
    clock = Clock()
    defender = Defender(DefenderOptions(threshold=2, observation_seconds=600, ban_seconds=100), clock)
    began = clock.now
    defender.merge_ban(IP, Ban(until=began + 100, seconds=100, count=1))
    assert defender.banned_until(IP) == began + 100
    assert defender.merge_hit(Hit(IP, began + 10, 5)) is None  # banned: nothing is scored

    clock.now = began + 101
    assert defender.merge_hit(Hit(IP, began - 1, 5)) is None  # before the ban began
    assert defender.merge_hit(Hit(IP, began + 101, 1)) is None  # 1 < 2
    again = defender.merge_hit(Hit(IP, began + 101, 1))

    assert again is not None and (again.seconds, again.count) == (200, 2)  # a repeat within a day: twice as long


def test_of_two_bans_the_later_is_kept() -> None:
    clock = Clock()
    defender = Defender(DefenderOptions(threshold=1, ban_seconds=100), clock)
    defender.score(IP, 1)  # banned here until now + 100
    defender.merge_ban(IP, Ban(until=clock.now + 50, seconds=50, count=1))
    assert defender.banned_until(IP) == clock.now + 100
    defender.merge_ban(IP, Ban(until=clock.now + 300, seconds=300, count=3))
    assert defender.banned_until(IP) == clock.now + 300


def test_only_a_shared_defender_queues_its_own_hits_and_bans_and_only_once() -> None:
    clock = Clock()
    alone = Defender(DefenderOptions(threshold=3), clock)
    alone.score(IP, 1)
    assert alone.take_outgoing() == ([], {})

    shared = Defender(DefenderOptions(threshold=3, ban_seconds=100), clock, shared=True)
    shared.score(IP, 1)
    shared.merge_hit(Hit(IP, clock.now, 1))  # another replica's: in the store already
    clock.now += 1
    ban = shared.score(IP, 1)  # 3: banned

    assert shared.take_outgoing() == ([Hit(IP, clock.now - 1, 1), Hit(IP, clock.now, 1)], {IP: ban})
    assert shared.take_outgoing() == ([], {})


@pytest.fixture
def stores(tmp_path: Path):
    """Two replicas' handles on one SQLite file; the store's own trading methods, as PostgreSQL has them."""
    handles = [Store(tmp_path / "rosterd.db") for _ in range(2)]
    for handle, name in zip(handles, ("a", "b"), strict=True):
        handle.replica = name
    yield handles
    for handle in handles:
        handle.close()


async def test_replicas_trade_hits_and_bans_through_the_store_without_counting_any_twice(stores) -> None:
    clock = Clock()
    options = DefenderOptions(threshold=15, observation_seconds=600, ban_seconds=100)
    a, b = (Defender(options, clock, shared=True) for _ in range(2))
    b_bans: list[tuple[str, Ban]] = []
    sync_a = DefenderSync(a, stores[0], Reporter(print, None), lambda ip, ban: pytest.fail("a bans by itself"))
    sync_b = DefenderSync(b, stores[1], Reporter(print, None), lambda ip, ban: b_bans.append((ip, ban)))

    for _ in range(10):
        a.score(IP, 1)
    for _ in range(4):
        b.score(IP, 1)
    assert await sync_a.sync_once()  # sends a's 10
    clock.now += 2
    assert await sync_b.sync_once()  # sends b's 4, takes a's 10: 14
    clock.now += 2
    assert await sync_b.sync_once()  # reads a's 10 again (the margin for late ones): still 14, not 24
    assert await sync_a.sync_once()  # takes b's 4, and never its own 10 back: 14
    assert (a.banned_until(IP), b.banned_until(IP), b_bans) == (None, None, [])

    ban = a.score(IP, 1)  # 15 on a
    assert ban is not None and ban.until == clock.now + 100
    assert await sync_a.sync_once()  # sends the ban
    clock.now += 2
    assert await sync_b.sync_once()  # takes it, whole

    assert b.banned_until(IP) == ban.until and b_bans == []


async def test_remote_hits_that_cross_the_threshold_ban_here_and_go_to_the_store(stores) -> None:
    clock = Clock()
    options = DefenderOptions(threshold=5, observation_seconds=600, ban_seconds=100)
    a, b = (Defender(options, clock, shared=True) for _ in range(2))
    b_bans: list[tuple[str, Ban]] = []
    sync_a = DefenderSync(a, stores[0], Reporter(print, None), lambda ip, ban: None)
    sync_b = DefenderSync(b, stores[1], Reporter(print, None), lambda ip, ban: b_bans.append((ip, ban)))
    for _ in range(2):
        b.score(IP, 1)
    assert await sync_b.sync_once()
    for _ in range(3):
        a.score(IP, 1)
    assert await sync_a.sync_once()  # a takes b's 2 before b sees a's 3: 5 on a
    assert a.banned_until(IP) == clock.now + 100

    clock.now += 1
    assert await sync_b.sync_once()  # a's ban is not in the store yet (next round); b's own count: 2 + 3
    assert b_bans == [(IP, Ban(until=clock.now + 100, seconds=100, count=1))]
    assert await sync_b.sync_once()  # b records its ban, which ends a second after a's
    assert await sync_a.sync_once()
    assert a.banned_until(IP) == b.banned_until(IP) == clock.now + 100


async def test_a_store_that_fails_is_reported_and_nothing_queued_is_lost(stores, tmp_path: Path) -> None:
    clock = Clock()
    a, b = (Defender(DefenderOptions(threshold=3), clock, shared=True) for _ in range(2))
    events: list[tuple[str, dict]] = []
    broken = Store(tmp_path / "other.db")
    broken.close()
    a.score(IP, 2)

    assert not await DefenderSync(a, broken, Reporter(print, lambda *e: events.append(e)), print).sync_once()
    assert [name for name, _ in events] == [DEFENDER_SYNC_FAILED]

    assert await DefenderSync(a, stores[0], Reporter(print, None), print).sync_once()  # the same 2, sent now
    assert await DefenderSync(b, stores[1], Reporter(print, None), print).sync_once()
    assert b.score(IP, 1) is not None  # 2 from a + 1: 3
