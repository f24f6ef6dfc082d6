"""Host keys: ed25519 and RSA-3072, generated once into a directory (mode 600) and reused after."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from daemon.files import write_whole
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
    try:  # published whole, and never over a key that exists
        write_whole(path, key.export_private_key(), mode=0o600, exclusive=True, sync_dir=True)
    except FileExistsError:
        key = asyncssh.read_private_key(path)  # another process was first: use its key
    write_whole(path.with_name(path.name + ".pub"), key.export_public_key(), mode=None)
    return key
