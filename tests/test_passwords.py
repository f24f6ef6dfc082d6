"""daemon/passwords.py: argon2id hashes, and a check that does the same work for a name that does not exist
(the SFTP login tests check bcrypt hashes and the cost of the decoy)."""

from __future__ import annotations

from argon2 import PasswordHasher

from daemon import passwords


def test_a_hash_is_argon2id_and_only_its_secret_matches() -> None:
    hashed = passwords.hash_secret("s3cret")
    assert hashed.startswith("$argon2id$") and PasswordHasher().verify(hashed, "s3cret")
    assert passwords.verify(hashed, "s3cret")
    assert not passwords.verify(hashed, "s3cret ") and not passwords.verify("not a hash", "s3cret")


def test_no_hash_is_checked_against_the_decoy_and_never_matches(monkeypatch) -> None:
    verified: list[str] = []
    real = PasswordHasher.verify
    monkeypatch.setattr(PasswordHasher, "verify", lambda self, h, p: verified.append(h) or real(self, h, p))
    assert not passwords.verify(None, "anything")
    assert len(verified) == 1 and verified[0].startswith("$argon2id$")
