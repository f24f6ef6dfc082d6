"""Console sessions (daemon/console/sessions.py): random ids, a CSRF token each, a new id at login, the end
after idle_seconds without a request or max_seconds in all, at logout, and for every session of a disabled
account. The clock is a hand-moved counter."""

from __future__ import annotations

from daemon.console.sessions import Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_login_gives_a_new_id_and_token_and_ends_the_anonymous_session() -> None:
    sessions = Sessions(idle_seconds=600, max_seconds=3600, clock=Clock())
    anonymous = sessions.new("127.0.0.1")
    assert len(anonymous.id) >= 43 and len(anonymous.csrf) >= 43 and anonymous.id != anonymous.csrf
    logged = sessions.log_in(anonymous, "ana", "admin", None, "127.0.0.1")
    assert logged.id != anonymous.id and logged.csrf != anonymous.csrf
    assert sessions.get(anonymous.id) is None  # an id planted before the login is worth nothing after it
    assert sessions.get(logged.id) is logged and (logged.name, logged.role) == ("ana", "admin")


def test_a_session_ends_after_idle_time_but_requests_keep_it_alive_until_its_total_lifetime() -> None:
    clock = Clock()
    sessions = Sessions(idle_seconds=600, max_seconds=1500, clock=clock)
    session = sessions.log_in(sessions.new("ip"), "ana", "admin", None, "ip")
    for _ in range(2):
        clock.now += 599
        assert sessions.get(session.id) is session  # each request restarts the idle time
    clock.now += 599  # 1797 s after it began: past max_seconds even though it was used within idle_seconds
    assert sessions.get(session.id) is None


def test_an_untouched_read_does_not_keep_a_session_alive() -> None:
    clock = Clock()
    sessions = Sessions(idle_seconds=600, max_seconds=3600, clock=clock)
    session = sessions.log_in(sessions.new("ip"), "ana", "admin", None, "ip")
    clock.now += 500
    assert sessions.get(session.id, touch=False) is session  # the live-update stream checking on it
    clock.now += 101
    assert sessions.get(session.id) is None


def test_logout_and_disabling_end_sessions() -> None:
    sessions = Sessions(idle_seconds=600, max_seconds=3600, clock=Clock())
    one = sessions.log_in(sessions.new("a"), "ana", "admin", None, "a")
    two = sessions.log_in(sessions.new("b"), "ana", "admin", None, "b")
    other = sessions.log_in(sessions.new("c"), "bob", "viewer", None, "c")
    sessions.end(one)
    assert sessions.get(one.id) is None and sessions.get(two.id) is two
    assert sessions.end_account("ana") == 1
    assert sessions.get(two.id) is None and sessions.get(other.id) is other
