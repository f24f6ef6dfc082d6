"""What a tenant sees: `/`, `/inbox`, `/results`, the folders of `/results` it is given, and the files
directly inside them.

A client's path is read lexically here, before anything touches the disk: decoded as UTF-8, `.` and
`..` folded, and refused outright when `..` would climb above `/`. Whatever is left is one of four
kinds; nothing here maps to a host path by string joining, so `//etc` is just the tenant-relative
`/etc`, which does not exist.

Which folders /results has is not this layer's to know (the pipeline writes them): the caller names them
(ServerOptions.result_folders, filled by daemon/app.py from daemon/receipts). RESULT_FOLDERS, the default
for callers that name none, is empty.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

INBOX = "inbox"
RESULTS = "results"
AREAS = (INBOX, RESULTS)
RESULT_FOLDERS: tuple[str, ...] = ()  # the default of ServerOptions.result_folders: none; the daemon names them

HIDDEN_PREFIX = ".rosterd-"  # the server's own files: never listed, never addressable by a client
TEMP_PREFIX = HIDDEN_PREFIX + "tmp-"
PARTIAL_SUFFIXES = (".filepart", ".part", ".tmp")  # WinSCP, Cyberduck and friends upload under these
MAX_NAME_BYTES = 255


class PathRefused(Exception):
    """The path is not one a client may ask for at all (answered with permission denied)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Kind(enum.Enum):
    ROOT = "root"  # "/"
    AREA = "area"  # "/inbox", "/results" or a folder of it, "/results/FOLDER"
    ENTRY = "entry"  # "/inbox/NAME", "/results/NAME" or "/results/FOLDER/NAME"
    ELSEWHERE = "elsewhere"  # anything else: does not exist for the tenant


@dataclass(frozen=True)
class VirtualPath:
    kind: Kind
    text: str  # the normalised path as the client should see it
    area: str | None = None
    name: str | None = None

    @property
    def hidden(self) -> bool:
        return self.name is not None and self.name.startswith(HIDDEN_PREFIX)

    def is_entry_in(self, area: str) -> bool:
        return self.kind is Kind.ENTRY and self.area == area and not self.hidden

    @property
    def readable(self) -> bool:
        """A file the tenant may read: one in /results or a folder of it (parse makes no other area of it)."""
        in_results = self.area == RESULTS or (self.area or "").startswith(f"{RESULTS}/")
        return self.kind is Kind.ENTRY and in_results and not self.hidden


def readable_areas(folders: tuple[str, ...] = RESULT_FOLDERS) -> tuple[str, ...]:
    """The areas a tenant may read from: /results and the given folders of it."""
    return (RESULTS, *(f"{RESULTS}/{folder}" for folder in folders))


def parse(raw: bytes, folders: tuple[str, ...] = RESULT_FOLDERS) -> VirtualPath:
    """Read a client path; relative paths are taken from `/`, where every session starts. `folders`: the
    folders of /results, each an area of its own."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PathRefused("undecodable") from None
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise PathRefused("control_character")  # NUL above all: it would cut the path short in C
    parts: list[str] = []
    for part in text.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise PathRefused("path_escape")
            parts.pop()
            continue
        if len(part.encode()) > MAX_NAME_BYTES:
            raise PathRefused("name_too_long")
        parts.append(part)
    normalised = "/" + "/".join(parts)
    if not parts:
        return VirtualPath(Kind.ROOT, normalised)
    if parts[0] == RESULTS and len(parts) > 1 and parts[1] in folders:
        parts = [f"{RESULTS}/{parts[1]}", *parts[2:]]  # a folder of /results is an area of its own
    if parts[0] not in (*readable_areas(folders), INBOX) or len(parts) > 2:
        return VirtualPath(Kind.ELSEWHERE, normalised)
    if len(parts) == 1:
        return VirtualPath(Kind.AREA, normalised, area=parts[0])
    return VirtualPath(Kind.ENTRY, normalised, area=parts[0], name=parts[1])


def is_acceptable_name(name: str) -> bool:
    """What may be uploaded: a zip (`*.zip`, any letter case), or a partial name that a rename completes.

    Anything else would sit in the inbox unanswered, as intake takes only zips; refusing it at once tells
    the uploader, and keeps the quota for real uploads.
    """
    return name.lower().endswith(".zip") or is_partial(name)


def is_partial(name: str) -> bool:
    """A name clients use while a transfer is still going on; completing means renaming it away."""
    lowered = name.lower()
    return name.startswith(".") or lowered.endswith(PARTIAL_SUFFIXES)
