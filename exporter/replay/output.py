"""The recorder's output directory: gzip files opened for append, bounded by size and age.

Everything here runs on the recorder's one worker thread (never on the event loop), so a
slow disk or a compression burst does not stall the feeds. Files are gzip members appended
to the day's file; each flush is a ``Z_SYNC_FLUSH``, so a process killed hard leaves a file
that reads up to its last flush (the reader stops at the break). Before appending to such a
file, its readable part is rewritten so the new member follows a complete one.
"""

from __future__ import annotations

import datetime
import errno
import gzip
import logging
import os
import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from exporter.replay.tardis import HEADER, parse_file_name

log = logging.getLogger(__name__)

_SIDECAR = re.compile(r"^(?P<exchange>.+)_markets_(?P<day>\d{4}-\d{2}-\d{2})\.json$")
_DAY = 86_400
_CHUNK = 1 << 20

Opener = Callable[[Path], BinaryIO]


def _append(path: Path) -> BinaryIO:
    return path.open("ab")


class SizeLimitReached(Exception):
    """The current day's files alone exceed ``record.max_bytes``."""


def is_disk_full(err: OSError) -> bool:
    return err.errno in (errno.ENOSPC, errno.EDQUOT)


def file_day(name: str) -> datetime.date | None:
    """The UTC day of a recorder file (data or sidecar), None for any other file."""
    parsed = parse_file_name(name)
    if parsed is not None:
        return parsed[1]
    match = _SIDECAR.match(name)
    if match is None:
        return None
    try:
        return datetime.date.fromisoformat(match["day"])
    except ValueError:
        return None


def salvage_truncated(path: Path, compresslevel: int = 5) -> bool:
    """Rewrite a gzip file whose stream breaks (a killed writer) with its complete lines.
    Returns True when the file was rewritten; an intact file is left alone."""
    if _gzip_intact(path):
        return False
    tmp = path.with_name(path.name + ".tmp")
    with (
        path.open("rb") as raw,
        gzip.GzipFile(fileobj=raw, mode="rb") as src,
        tmp.open("wb") as out,
        gzip.GzipFile(
            filename="", fileobj=out, mode="wb", compresslevel=compresslevel, mtime=0
        ) as dst,
    ):
        tail = b""
        try:
            while chunk := src.read1(_CHUNK):
                data = tail + chunk
                cut = data.rfind(b"\n") + 1
                dst.write(data[:cut])
                tail = data[cut:]
        except (EOFError, zlib.error, gzip.BadGzipFile):
            pass  # the break: the partial line in ``tail`` is dropped
    os.replace(tmp, path)
    return True


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as raw:
        return raw.read(2) == b"\x1f\x8b"


def _gzip_intact(path: Path) -> bool:
    """True when every gzip member of the file is complete (decompressed, not kept)."""
    with path.open("rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as src:
        try:
            while src.read1(_CHUNK):
                pass
        except (EOFError, zlib.error, gzip.BadGzipFile):
            return False
    return True


@dataclass
class _Open:
    raw: BinaryIO
    gz: gzip.GzipFile
    size: int  # bytes on disk after the last flush


@dataclass
class Deleted:
    retention: int = 0
    max_bytes: int = 0
    total_bytes: int = 0  # the recorder's files on disk after deleting
    failed: list[str] = field(default_factory=list)


class OutputFiles:
    """The open gzip files of one recorder and the bounds of its directory."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        retention_days: float,
        compresslevel: int = 5,
        opener: Opener = _append,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.retention_days = retention_days
        self.compresslevel = compresslevel
        self._opener = opener
        self._files: dict[Path, _Open] = {}

    @property
    def open_paths(self) -> set[Path]:
        return set(self._files)

    def _open(self, path: Path) -> _Open:
        size = path.stat().st_size if path.exists() else 0
        if size and not _is_gzip(path):
            # Appending gzip members would leave a file no reader understands.
            raise OSError(errno.EINVAL, f"{path} exists and is not gzip: not appended to")
        if size and salvage_truncated(path, self.compresslevel):
            log.warning("%s: truncated by an earlier run; kept its complete rows", path)
            size = path.stat().st_size
        raw = self._opener(path)
        try:
            gz = gzip.GzipFile(
                filename="", fileobj=raw, mode="wb", compresslevel=self.compresslevel, mtime=0
            )
            if size == 0:
                gz.write(HEADER.encode() + b"\n")
        except BaseException:
            raw.close()
            raise
        opened = _Open(raw, gz, size)
        self._files[path] = opened
        return opened

    def write(self, batch: Mapping[Path, bytes]) -> int:
        """Append each file's rows and flush them to disk; returns the bytes added on disk."""
        added = 0
        for path, data in batch.items():
            f = self._files.get(path) or self._open(path)
            f.gz.write(data)
            f.gz.flush()  # Z_SYNC_FLUSH: readable up to here if the process dies
            new_size = f.raw.tell()
            added += new_size - f.size
            f.size = new_size
        return added

    def close_except(self, keep: Iterable[Path]) -> int:
        """Close (gzip trailer written) every open file not in ``keep``; returns the bytes
        the trailers added."""
        keep = set(keep)
        return sum(self._close(path) for path in [p for p in self._files if p not in keep])

    def close_all(self) -> int:
        """Close every file; the first error is raised after trying them all."""
        first: OSError | None = None
        added = 0
        for path in list(self._files):
            try:
                added += self._close(path)
            except OSError as err:
                first = first or err
        if first is not None:
            raise first
        return added

    def _close(self, path: Path) -> int:
        f = self._files.pop(path)
        try:
            f.gz.close()
            return f.raw.tell() - f.size
        finally:
            f.raw.close()

    def enforce_bounds(self, today: datetime.date, now: float) -> Deleted:
        """Delete files past ``retention_days``, then the oldest days' files while the total
        passes ``max_bytes``. Raises SizeLimitReached when the current day's files alone
        (and open files) exceed it."""
        out = Deleted()
        files: list[tuple[datetime.date, str, int]] = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                day = file_day(entry.name)
                if day is None or not entry.is_file():
                    continue
                files.append((day, entry.name, entry.stat().st_size))
        files.sort()
        open_names = {p.name for p in self._files}
        horizon = now - self.retention_days * _DAY
        kept: list[tuple[datetime.date, str, int]] = []
        for day, name, size in files:
            day_end = (day - datetime.date(1970, 1, 1)).days * _DAY + _DAY
            if day_end < horizon and name not in open_names and self._delete(name, out):
                out.retention += 1
            else:
                kept.append((day, name, size))
        total = sum(size for _d, _n, size in kept)
        for day, name, size in kept:
            if total <= self.max_bytes:
                break
            if day >= today or name in open_names:
                continue
            if self._delete(name, out):
                out.max_bytes += 1
                total -= size
        out.total_bytes = total
        if total > self.max_bytes:
            raise SizeLimitReached(
                f"the current day's files take {total} bytes, over record.max_bytes "
                f"{self.max_bytes}"
            )
        return out

    def _delete(self, name: str, out: Deleted) -> bool:
        try:
            (self.directory / name).unlink()
        except FileNotFoundError:
            return True
        except OSError as err:
            out.failed.append(f"{name}: {err}")
            return False
        log.info("record: deleted %s (bounds)", name)
        return True
