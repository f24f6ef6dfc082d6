"""The defender: scores failed logins per source address and bans an address that scores too much.

The scoring follows SFTPGo's defender (see the research digest, §1.6): a login attempt as a user that does
not exist adds 2, a wrong password or key adds 1, a limit exceeded adds 3. When the scores of one address
within the observation window add up to the threshold (15 in 30 minutes by default), the address is banned
for 30 minutes; each later ban of the same address lasts `ban_multiplier` times the one before (capped at a
week). A banned address is dropped as soon as it connects, before any SSH exchange.

Bans and the count of earlier bans are saved to a JSON file in the state directory whenever they change, so
a restart keeps them; scores below the threshold are not saved (a restart forgets a half-guessed password).
The file is written beside itself and renamed into place, so a crash leaves the old file or the new one.

Replicas sharing a store (`shared=True`) judge on everything any of them saw: each Defender queues its own
hits and bans for the store (`take_outgoing`, sent by daemon/sftp/shared.py), counts another replica's hit
at the time it happened as if it had seen it (`merge_hit`), and takes another replica's ban when it ends
later than its own (`merge_ban`). A hit from before a ban of its address began is spent on that ban and not
counted again. Everything stays in memory, so `banned_until` never waits for the database.
"""

from __future__ import annotations

import bisect
import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from daemon.files import write_whole

MAX_BAN_SECONDS = 7 * 24 * 3600
FORGET_AFTER_SECONDS = 24 * 3600  # an address whose last ban ended a day ago starts afresh
MAX_TRACKED_ADDRESSES = 10_000  # scores of this many addresses at most; the oldest are forgotten first
MAX_QUEUED_HITS = 100_000  # hits waiting for a store that does not answer; past it the oldest are dropped


@dataclass(frozen=True)
class DefenderOptions:
    threshold: int = 15
    observation_seconds: float = 30 * 60
    ban_seconds: float = 30 * 60
    ban_multiplier: float = 2.0
    score_unknown_user: int = 2
    score_bad_password: int = 1
    score_limit_exceeded: int = 3
    sync_seconds: float = 2.0  # with a shared store: how often hits and bans go to it and come from it


@dataclass
class Ban:
    until: float  # unix time
    seconds: float  # how long this ban lasts
    count: int  # how many times the address has been banned, this ban included


@dataclass(frozen=True)
class Hit:
    """One scored failure of an address, at a time on the defender's clock (unix seconds)."""

    ip: str
    at: float
    points: int


@dataclass
class _Scores:
    hits: deque[tuple[float, int]] = field(default_factory=deque)  # (time, score)

    def add(self, at: float, points: int) -> None:
        bisect.insort(self.hits, (at, points))  # in time order (another replica's clock may run ahead) for `total`

    def total(self, since: float) -> int:
        while self.hits and self.hits[0][0] < since:
            self.hits.popleft()
        return sum(score for _, score in self.hits)


class Defender:
    """In-memory scores and bans; `state()` and `load()` give and take what is saved."""

    def __init__(self, options: DefenderOptions, clock: Callable[[], float] = time.time, shared: bool = False) -> None:
        self.options = options
        self._clock = clock
        self._scores: dict[str, _Scores] = {}
        self._bans: dict[str, Ban] = {}
        self._shared = shared  # queue own hits and bans for the other replicas
        self._outgoing_hits: deque[Hit] = deque(maxlen=MAX_QUEUED_HITS)
        self._outgoing_bans: dict[str, Ban] = {}

    def now(self) -> float:
        return self._clock()

    def banned_until(self, ip: str) -> float | None:
        """When the ban on `ip` ends, or None when it may connect."""
        ban = self._bans.get(ip)
        if ban is None or ban.until <= self._clock():
            return None
        return ban.until

    def bans_in_force(self) -> int:
        now = self._clock()
        return sum(1 for ban in self._bans.values() if ban.until > now)

    def score(self, ip: str, points: int) -> Ban | None:
        """Add `points` for `ip`; returns the new ban when this crossed the threshold, else None."""
        if points <= 0 or self.banned_until(ip) is not None:
            return None
        now = self._clock()
        if self._shared:
            self._outgoing_hits.append(Hit(ip, now, points))
        self._scores_of(ip).add(now, points)
        return self._judge(ip, now)

    def merge_hit(self, hit: Hit) -> Ban | None:
        """Count a hit another replica saw, at its own time; returns the ban when it crossed the threshold.

        Not queued for the store: it is there already, under the replica that saw it."""
        now = self._clock()
        earlier = self._bans.get(hit.ip)
        if hit.points <= 0 or self.banned_until(hit.ip) is not None or hit.at < now - self.options.observation_seconds:
            return None
        if earlier is not None and hit.at < earlier.until - earlier.seconds:
            return None  # it came before that ban began: spent on it
        self._scores_of(hit.ip).add(hit.at, hit.points)
        return self._judge(hit.ip, now)

    def merge_ban(self, ip: str, ban: Ban) -> None:
        """Take a ban another replica decided when it ends later than the one known here (if any)."""
        known = self._bans.get(ip)
        if known is not None and known.until >= ban.until:
            return
        self._bans[ip] = ban
        if ban.until > self._clock():
            self._scores.pop(ip, None)  # as when a ban starts here: the hits were spent on it

    def take_outgoing(self) -> tuple[list[Hit], dict[str, Ban]]:
        """This replica's hits and bans not yet sent to the store (emptied: `give_back` what failed to go)."""
        hits, bans = list(self._outgoing_hits), self._outgoing_bans
        self._outgoing_hits.clear()
        self._outgoing_bans = {}
        return hits, bans

    def give_back(self, hits: Iterable[Hit], bans: dict[str, Ban]) -> None:
        """Queue again what could not be sent, before what was queued since (the oldest go first when full)."""
        self._outgoing_hits = deque([*hits, *self._outgoing_hits], maxlen=MAX_QUEUED_HITS)
        self._outgoing_bans = {**bans, **self._outgoing_bans}

    def _scores_of(self, ip: str) -> _Scores:
        scores = self._scores.pop(ip, None) or _Scores()
        self._scores[ip] = scores  # re-inserted: dict order is least recently scored first
        return scores

    def _judge(self, ip: str, now: float) -> Ban | None:
        if self._scores[ip].total(now - self.options.observation_seconds) < self.options.threshold:
            self._forget_oldest()
            return None
        del self._scores[ip]
        return self._ban(ip, now)

    def _ban(self, ip: str, now: float) -> Ban:
        earlier = self._bans.get(ip)
        count = 1
        seconds = self.options.ban_seconds
        if earlier is not None and now - earlier.until < FORGET_AFTER_SECONDS:
            count = earlier.count + 1
            seconds = min(earlier.seconds * self.options.ban_multiplier, MAX_BAN_SECONDS)
        ban = Ban(until=now + seconds, seconds=seconds, count=count)
        self._bans[ip] = ban
        if self._shared:
            self._outgoing_bans[ip] = ban
        return ban

    def _forget_oldest(self) -> None:
        while len(self._scores) > MAX_TRACKED_ADDRESSES:
            del self._scores[next(iter(self._scores))]

    def state(self) -> dict:
        """What survives a restart: bans still in force or recent enough to count for the next one."""
        self.forget_old_bans()
        bans = {ip: {"until": b.until, "seconds": b.seconds, "count": b.count} for ip, b in self._bans.items()}
        return {"version": 1, "bans": bans}

    def forget_old_bans(self) -> None:
        """Drop bans that ended a day ago or more: they count for nothing any more."""
        now = self._clock()
        for ip in [ip for ip, ban in self._bans.items() if now - ban.until >= FORGET_AFTER_SECONDS]:
            del self._bans[ip]

    def load(self, state: dict) -> None:
        for ip, ban in state.get("bans", {}).items():
            self._bans[ip] = Ban(until=float(ban["until"]), seconds=float(ban["seconds"]), count=int(ban["count"]))


def read_state(path: Path) -> dict:
    """The saved state, or an empty one when the file is missing. Blocking.

    An unreadable file raises: starting with every ban silently forgotten would be worse than not starting.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        state = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}: not the defender's JSON ({exc}); move it away to start without saved bans")
    if not isinstance(state, dict) or state.get("version") != 1:
        raise ValueError(f"{path}: not a version 1 defender file; move it away to start without saved bans")
    return state


def write_state(path: Path, state: dict) -> None:
    """Replace the saved state at once (mode 600). Blocking."""
    write_whole(path, json.dumps(state, indent=1, sort_keys=True), mode=0o600)
