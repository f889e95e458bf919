"""Where summary files live and how they appear: server-chosen names, atomic publication.

Where it sits: between the renderer and SQL. Names come from the event id through a uuid5 (never
from a message field, so no producer can write outside the media root or guess a path), the same
event always maps to the same names (a re-render replaces the files), and each file is written under
a hidden temporary name in the same directory and renamed into place: a reader sees the old file
or the new one, never half of one. SQL stores paths relative to the media root.
"""

from __future__ import annotations

import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

MEDIA_NAMESPACE = uuid.UUID("0b7d2f0e-3c55-4f7e-9d0a-5c1f8e2a6b41")


@dataclass(frozen=True)
class MediaPaths:
    root: Path
    video: str  # relative to root, POSIX
    subtitles: str
    thumbnail: str

    def abs(self, rel: str) -> Path:
        return self.root / rel


def stem(kind: str, key: str) -> str:
    return uuid.uuid5(MEDIA_NAMESPACE, f"{kind}|{key}").hex


def summary_paths(root: Path, event_id: str) -> MediaPaths:
    name = stem("summary", event_id)
    return MediaPaths(Path(root), f"summaries/{name}.mp4", f"summaries/{name}.vtt", f"summaries/{name}.jpg")


def digest_paths(root: Path, shift_start_iso: str) -> tuple[str, str, str]:
    """(video, report, subtitles), relative to the media root."""
    name = stem("digest", shift_start_iso)
    return f"digests/{name}.mp4", f"digests/{name}.md", f"digests/{name}.vtt"


def resolve(root: Path, rel: str) -> Path:
    """A stored relative path back to a file, refusing anything that leaves the media root."""
    root = Path(root).resolve()
    path = (root / rel).resolve()
    if root not in path.parents:
        raise ValueError(f"{rel!r} is outside the media root")
    return path


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success rename it over `final`, else delete it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def sweep_partial_files(root: Path, older_than_s: float = 3600.0) -> list[Path]:
    """Delete `atomic_path` leftovers (`.NAME.XXXXXXXX.part`) a killed writer never renamed nor
    removed; only old ones, so a replica writing right now keeps its file. Returns what it deleted."""
    cutoff = time.time() - older_than_s
    removed = []
    for path in Path(root).rglob(".*.part"):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # another replica swept it first
            pass
    return removed


def write_text_atomic(final: Path, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")
