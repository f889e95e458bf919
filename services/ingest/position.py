"""Where a followed log file was read up to, kept across restarts of `ingest logs --follow`.

A position is the file's inode, a byte offset at a line boundary, and a fingerprint of the
file's first bytes (a deleted file's inode number is often reused by the next file created, so
the inode alone cannot tell "same file" from "new file"). It is saved only after the producer
has flushed every record up to it, and written atomically (temporary file, fsync, rename), so a
restart resumes at the first line not yet delivered: nothing is lost, and after a clean stop
(Ctrl-C, SIGTERM) or a failed delivery nothing is repeated. After SIGKILL the lines sent since
the last save (at most a second's or `SAVE_EVERY_LINES` lines' worth) are sent again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from schemas.errors import ConfigError

HEAD_BYTES = 1024  # how much of the file's start the fingerprint covers
SAVE_EVERY_LINES = 1000
SAVE_EVERY_S = 1.0


@dataclass(frozen=True)
class FilePosition:
    inode: int
    offset: int
    head_len: int  # min(offset, HEAD_BYTES): only bytes already read are fingerprinted
    head: str  # sha256 of the file's first head_len bytes

    def same_file(self, fh) -> bool:
        return fingerprint(fh, self.head_len) == self.head


def fingerprint(fh, n: int) -> str:
    return hashlib.sha256(os.pread(fh.fileno(), n, 0)).hexdigest()


def default_position_file(var_dir: Path, log_path: Path, asset: str) -> Path:
    """var/ingest/positions/<asset>-<file name>-<hash of the absolute path>.json"""
    absolute = str(Path(log_path).resolve())
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(log_path).name)[:64]
    digest = hashlib.sha256(absolute.encode()).hexdigest()[:10]
    return Path(var_dir) / "ingest" / "positions" / f"{asset}-{name}-{digest}.json"


class PositionStore:
    """One JSON file holding one FilePosition, replaced atomically."""

    def __init__(self, path: Path, log_path: Path):
        self.path, self.log_path = Path(path), Path(log_path)

    def load(self) -> FilePosition | None:
        try:
            data = json.loads(self.path.read_text())
            return FilePosition(int(data["inode"]), int(data["offset"]), int(data["head_len"]), str(data["head"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"the follow position {self.path} is unreadable ({e}); delete it to start again from "
                              "the end of the log (or add --from-start)") from None

    def save(self, pos: FilePosition) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = asdict(pos) | {"file": str(self.log_path.resolve())}
        with open(tmp, "w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)


class PositionTracker:
    """The reader's position, the position of what was sent, and what is saved.

    The reader calls `advance` for each line it hands out; the ingest loop calls `mark_sent`
    once that line's record went to the producer; `checkpoint` flushes the producer and saves."""

    def __init__(self, store: PositionStore):
        self.store = store
        self.saved: FilePosition | None = store.load()
        self.read: FilePosition | None = None
        self.sent: FilePosition | None = None
        self.flush: Callable[[], None] = lambda: None  # set by the sink's owner

    def advance(self, pos: FilePosition, record: bool) -> None:
        """The reader is past a line. A blank line (`record` False) makes no record: it counts as
        sent at once, since the reader only runs after every record it handed out was sent."""
        self.read = pos
        if not record:
            self.sent = pos

    def mark_sent(self) -> None:
        self.sent = self.read

    def checkpoint(self) -> None:
        """Flush the producer (raises if a record was not delivered), then save what was sent."""
        if self.sent is None or self.sent == self.saved:
            return
        self.flush()
        self.store.save(self.sent)
        self.saved = self.sent
