"""The types at intake's seams: what it is given, and what it hands each upload on to.

Intake is given, by daemon/app.py: each tenant's folders (`TenantPaths`), its own settings (`IntakeOptions`),
the next stage (`Process`: daemon/snapshots/process.py's Processor, which takes an upload to a final state,
holding each tenant's validation and hold rules itself) and the receipts writer's `answer` (`Answer`:
daemon/receipts/writer.py's Receipts.answer). Intake imports neither: it defines what it needs here, and the
wiring hands it over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from daemon.objects.mirror import NO_MIRROR, Mirror
from daemon.store import Upload


@dataclass(frozen=True, slots=True)
class TenantPaths:
    name: str
    inbox: Path
    results: Path


@dataclass(frozen=True, slots=True)
class IntakeOptions:
    state_dir: Path
    settle_seconds: float = 5.0
    rescan_seconds: float = 60.0
    workers: int = 2  # uploads processed at once, across tenants (one at a time per tenant)
    quarantine_days: float = 30.0
    supervise_seconds: float = 30.0  # how often uploads left unfinished or unanswered by an error are taken up
    decisions_seconds: float = 2.0  # how often the store is read for operators' decisions to log
    on_accepted: Callable[[str, str], None] | None = None  # (tenant, upload_id): an approval made it current
    mirror: Mirror = NO_MIRROR  # where replicas find an upload's bytes ([storage] kind = "s3"; daemon/objects)


class Process(Protocol):
    """The next stage: takes a recorded upload, in its tenant's turn, to a final state with its receipt."""

    async def __call__(self, upload: Upload) -> None:
        """Process the upload. Raising PoolUnavailable (daemon/intake/workers.py) means no worker could run it:
        not the upload's fault, tried again later. Any other exception counts towards giving up on it."""

    async def give_up(self, upload: Upload, error: str) -> None:
        """Its processing raised MAX_CRASHES times: record it failed, set it aside and answer it."""


class Answer(Protocol):
    """Write the receipt of the upload's recorded state (and mark a final one answered); latest.json too when
    `latest` is True, or when it is None and the upload is its tenant's newest."""

    async def __call__(self, upload: Upload, latest: bool | None = True) -> None: ...
