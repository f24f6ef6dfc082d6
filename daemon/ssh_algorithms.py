"""The SSH algorithms rosterd negotiates, set explicitly (asyncssh's defaults include NIST curves and SHA-1):
as a server (daemon/sftp) and as a client (the SFTP push target) alike.

Each list keeps our order of preference and drops what the installed asyncssh does not implement, so a
newer asyncssh can add the post-quantum exchanges without a code change here.
"""

from __future__ import annotations

from asyncssh.encryption import get_encryption_algs
from asyncssh.kex import get_kex_algs
from asyncssh.mac import get_mac_algs

_KEX = (
    "mlkem768x25519-sha256",  # post-quantum hybrid first
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256",  # what older clients such as OpenSSH 9.2 settle on
    "curve25519-sha256@libssh.org",
)
_CIPHERS = (
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)
_MACS = (  # used only with the CTR ciphers: the AEAD ciphers carry their own
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "umac-128-etm@openssh.com",
)
HOST_KEY_ALGS = (b"ssh-ed25519", b"rsa-sha2-512", b"rsa-sha2-256")
_CLIENT_SIGNATURES = (  # what a tenant's key may sign with: no ssh-rsa (SHA-1), no DSA
    "ssh-ed25519",
    "sk-ssh-ed25519@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


def _offered(wanted: tuple[str, ...], available: list[bytes]) -> list[str]:
    return [name for name in wanted if name.encode() in available]


def connection_options() -> dict[str, object]:
    """Keyword arguments for `asyncssh.listen` (the SFTP server) that pin every negotiated algorithm."""
    from asyncssh.public_key import get_public_key_algs

    return {**client_options(), "signature_algs": _offered(_CLIENT_SIGNATURES, get_public_key_algs())}


def client_options() -> dict[str, object]:
    """Keyword arguments for `asyncssh.connect` (a vendor's SFTP server): the server's exchanges, ciphers and
    MACs; which signatures a tenant's key may make is the server's rule, not a client's."""
    return {
        "kex_algs": _offered(_KEX, get_kex_algs()),
        "encryption_algs": _offered(_CIPHERS, get_encryption_algs()),
        "mac_algs": _offered(_MACS, get_mac_algs()),
        "compression_algs": ["none"],  # zips do not compress, and compression under encryption leaks
    }
