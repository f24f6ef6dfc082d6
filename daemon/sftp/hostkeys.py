"""Host keys: ed25519 and RSA-3072, generated once into a directory (mode 600) and reused after."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from daemon.ssh_algorithms import HOST_KEY_ALGS

_KEYS = (  # file name, asyncssh algorithm, generation options
    ("ssh_host_ed25519_key", "ssh-ed25519", {}),
    ("ssh_host_rsa_key", "ssh-rsa", {"key_size": 3072}),
)


@dataclass(frozen=True)
class HostKeys:
    pairs: list[asyncssh.SSHKeyPair]
    fingerprints: list[str]  # "ssh-ed25519 SHA256:...", for the start-up log
    generated: list[str]  # the files made by this call (first start), the others were read


def load_or_create(directory: Path) -> HostKeys:
    """The server's keys, each offered only with the host key algorithms we allow. Blocking."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    pairs, prints, generated = [], [], []
    for file_name, algorithm, generation in _KEYS:
        existed = (directory / file_name).exists()
        key = _read_or_generate(directory / file_name, algorithm, generation)
        if not existed:
            generated.append(str(directory / file_name))
        (pair,) = asyncssh.load_keypairs([key])
        # An RSA key would otherwise also be offered as ssh-rsa (SHA-1 signatures); asyncssh has no
        # server option for host key algorithms, so the pair's own list is narrowed.
        pair.host_key_algorithms = tuple(alg for alg in pair.host_key_algorithms if alg in HOST_KEY_ALGS)
        pairs.append(pair)
        prints.append(f"{key.get_algorithm()} {key.get_fingerprint('sha256')}")
    return HostKeys(pairs, prints, generated)


def _read_or_generate(path: Path, algorithm: str, generation: dict) -> asyncssh.SSHKey:
    if path.exists():
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)  # tightened, as ssh-keygen would have written it
        return asyncssh.read_private_key(path)
    key = asyncssh.generate_private_key(algorithm, **generation)
    draft = path.with_name(f"{path.name}.{os.getpid()}.new")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.export_private_key())
        out.flush()
        os.fsync(out.fileno())
    try:
        os.link(draft, path)  # publishes the whole file at once, and never over a key that exists
    except FileExistsError:
        key = asyncssh.read_private_key(path)  # another process was first: use its key
    finally:
        os.unlink(draft)
    path.with_name(path.name + ".pub").write_bytes(key.export_public_key())
    return key
