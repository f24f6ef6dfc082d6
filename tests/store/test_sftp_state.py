"""What the replicas' SFTP servers share through the store: one set of host keys (the first replica's), the
failed logins each saw and the bans each decided."""

from __future__ import annotations

from daemon.store import LoginFailure, SharedBan, StoreInterface


def test_the_first_replicas_host_key_is_the_one_every_replica_gets(store: StoreInterface) -> None:
    assert store.host_key("ssh_host_ed25519_key", "KEY-OF-ALPHA") == "KEY-OF-ALPHA"
    assert store.host_key("ssh_host_ed25519_key", "KEY-OF-BETA") == "KEY-OF-ALPHA"
    assert store.host_key("ssh_host_rsa_key", "RSA-OF-BETA") == "RSA-OF-BETA"  # each name on its own


def test_failed_logins_are_seen_by_the_other_replicas_and_forgotten_when_old(store: StoreInterface) -> None:
    store.replica = "alpha"
    store.record_login_failures([LoginFailure("192.0.2.7", 1000.0, 2, "alpha"),
                                 LoginFailure("192.0.2.7", 1005.5, 1, "alpha")], forget_before=0)  # fmt: skip
    store.replica = "beta"
    store.record_login_failures([LoginFailure("198.51.100.1", 1010.0, 3, "beta")], forget_before=0)
    assert store.login_failures_since(1001.0) == [LoginFailure("192.0.2.7", 1005.5, 1, "alpha")]  # not its own
    store.replica = "alpha"
    assert store.login_failures_since(0) == [LoginFailure("198.51.100.1", 1010.0, 3, "beta")]
    store.record_login_failures([], forget_before=1006.0)  # recording prunes what the window no longer needs
    store.replica = "gamma"
    assert [f.at for f in store.login_failures_since(0)] == [1010.0]


def test_a_ban_is_kept_when_it_ends_later_and_listed_while_it_counts(store: StoreInterface) -> None:
    store.record_ban(SharedBan("192.0.2.7", until=5000.0, seconds=1800.0, count=1))
    store.record_ban(SharedBan("192.0.2.7", until=4000.0, seconds=1800.0, count=1))  # an older word on it
    store.record_ban(SharedBan("203.0.113.9", until=2000.0, seconds=1800.0, count=1))
    assert store.bans(ending_after=3000.0) == [SharedBan("192.0.2.7", 5000.0, 1800.0, 1)]
    store.record_ban(SharedBan("192.0.2.7", until=9000.0, seconds=3600.0, count=2))  # banned again, longer
    assert store.bans(ending_after=3000.0) == [SharedBan("192.0.2.7", 9000.0, 3600.0, 2)]
