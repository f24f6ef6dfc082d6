"""Host keys: ed25519 and RSA-3072, generated once into a directory (mode 600) and reused after.

Replicas behind one load balancer must present the same keys, or a client that reaches another replica sees
a changed host key and (rightly) refuses to go on. So, given a store they share, each key this replica holds
is offered to it and the key the store keeps (the first replica's) is the one used: a replica that had
another one replaces its file with the cluster's, so its next start, with or without the store, agrees.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
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
    generated: list[str]  # the files made by this call (first start) and kept, the others were read
    adopted: list[tuple[str, str]] = field(default_factory=list)  # (file, fingerprint) replaced by the cluster's


# (file name, this replica's private key in OpenSSH format) -> the cluster's key under that name. Blocking.
AgreeOnKey = Callable[[str, str], str]


def load_or_create(directory: Path, agree: AgreeOnKey | None = None) -> HostKeys:
    """The server's keys, each offered only with the host key algorithms we allow. Blocking.

    With `agree` (the shared store's `host_key`), each key is the cluster's; a key made here and at once
    replaced by the cluster's counts as adopted, not generated: it never served a client.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    pairs, prints, generated, adopted = [], [], [], []
    for file_name, algorithm, generation in _KEYS:
        path = directory / file_name
        existed = path.exists()
        key = _read_or_generate(path, algorithm, generation)
        cluster_key = _adopt_cluster_key(path, key, agree) if agree is not None else None
        if cluster_key is not None:
            key = cluster_key
            adopted.append((str(path), key.get_fingerprint("sha256")))
        elif not existed:
            generated.append(str(path))
        (pair,) = asyncssh.load_keypairs([key])
        # An RSA key would otherwise also be offered as ssh-rsa (SHA-1 signatures); asyncssh has no
        # server option for host key algorithms, so the pair's own list is narrowed.
        pair.host_key_algorithms = tuple(alg for alg in pair.host_key_algorithms if alg in HOST_KEY_ALGS)
        pairs.append(pair)
        prints.append(f"{key.get_algorithm()} {key.get_fingerprint('sha256')}")
    return HostKeys(pairs, prints, generated, adopted)


def _adopt_cluster_key(path: Path, key: asyncssh.SSHKey, agree: AgreeOnKey) -> asyncssh.SSHKey | None:
    """The cluster's key when it is not `key`, written over `path` (and its .pub); None when `key` is it.

    Keys are compared by their public part: the OpenSSH export of one key differs from call to call (its
    check bytes are random), so the texts of one key need not match.
    """
    text = agree(path.name, key.export_private_key().decode("ascii"))
    cluster_key = asyncssh.import_private_key(text)
    if cluster_key.public_data == key.public_data:
        return None
    write_whole(path, text, mode=0o600, sync_dir=True)
    write_whole(path.with_name(path.name + ".pub"), cluster_key.export_public_key(), mode=None)
    return cluster_key


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
