"""What is on disk is checked before it is trusted: each result file's size and CRC-32.

Writers record `{relative path: {"bytes": n, "crc32": c}}` as they write (the checksum is taken
from the bytes on their way out, so nothing is read back); readers check every recorded file's
size always (a stat per file), and its checksum when asked or when the files are small enough to
hash in a blink (`CHEAP_TO_VERIFY_BYTES`). The functions take a folder and such records, not a
layout, so any store of files (one `.npy` per array today, Zarr chunks tomorrow) can use them.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

# Up to this many recorded bytes, checksums are checked even unasked: hashing them costs less than
# starting the JAX that would rerun the job (benchmarks/README.md has CRC-32's speed)
CHEAP_TO_VERIFY_BYTES = 64 * 2**20
READ_BLOCK = 4 * 2**20


class ChecksummedFile:
    """A binary file opened for writing that counts and checksums every byte written to it."""

    def __init__(self, path: Path, mode: str = "wb", *, crc32: int = 0, size: int = 0):
        """`mode="ab"` goes on from an existing file whose checksum and size so far are given."""
        self.file = open(path, mode)
        self.crc32, self.size = crc32, size

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        self.crc32 = zlib.crc32(data, self.crc32)
        self.size += len(data)
        return self.file.write(data)

    def flush(self) -> None:
        if not self.file.closed:
            self.file.flush()

    def close(self) -> None:
        """Flushes to the disk itself before closing: a result is complete only once it is there."""
        if self.file.closed:
            return
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def record(self) -> dict:
        return {"bytes": self.size, "crc32": self.crc32}


def record_of(path: Path) -> dict:
    """Size and checksum of a file already written (for files small enough to read back)."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        while block := f.read(READ_BLOCK):
            crc, size = zlib.crc32(block, crc), size + len(block)
    return {"bytes": size, "crc32": crc}


def recorded_bytes(records: dict[str, dict]) -> int:
    return sum(r["bytes"] for r in records.values() if _well_formed(r))


def wants_checksums(records: dict[str, dict], verify: bool | None) -> bool:
    """`verify` True or False decides; None checks checksums when they are cheap to check."""
    if verify is None:
        return recorded_bytes(records) <= CHEAP_TO_VERIFY_BYTES
    return verify


def find_damage(folder: Path, records: dict[str, dict], checksums: bool) -> str | None:
    """The first thing wrong with the recorded files under `folder`, in words, or None.

    Sizes first (cheap: a stat each), so a truncated file is named without hashing the others;
    then, with `checksums`, contents (a file hard-linked under several names is read once).
    """
    for name, record in records.items():
        if not _inside(name) or not _well_formed(record):
            return f"summary.json's record of {name!r} is not a file record of this folder"
        problem = _size_problem(folder, name, record["bytes"])
        if problem:
            return problem
    if checksums:
        seen: set[tuple[int, int]] = set()
        for name, record in records.items():
            problem = _checksum_problem(folder / name, name, record, seen)
            if problem:
                return problem
    return None


def _inside(name: str) -> bool:
    """A relative path that stays in the folder (a summary is read from disk: trust nothing)."""
    path = Path(name)
    return bool(name) and "\x00" not in name and not path.is_absolute() and ".." not in path.parts


def _well_formed(record) -> bool:
    return (isinstance(record, dict) and isinstance(record.get("bytes"), int)
            and isinstance(record.get("crc32"), int))


def _size_problem(folder: Path, name: str, expected: int) -> str | None:
    try:
        size = (folder / name).stat().st_size
    except FileNotFoundError:
        return f"{_missing_part(folder, name)} is missing"
    except (OSError, ValueError) as error:  # ValueError: a name the OS cannot take
        return f"{name} cannot be read: {getattr(error, 'strerror', None) or error}"
    if size < expected:
        return f"{name} is truncated: {size:,} bytes, expected {expected:,}"
    if size > expected:
        return f"{name} is too long: {size:,} bytes, expected {expected:,}"
    return None


def _missing_part(folder: Path, name: str) -> str:
    """The outermost missing folder on the way to a missing file (`grads/` when it is gone)."""
    parts = Path(name).parts
    for depth in range(1, len(parts)):
        if not (folder.joinpath(*parts[:depth])).is_dir():
            return "/".join(parts[:depth]) + "/"
    return name


def _checksum_problem(path: Path, name: str, record: dict, seen: set) -> str | None:
    try:
        stat = path.stat()
        identity = (stat.st_dev, stat.st_ino, record["crc32"])
        if identity in seen:  # the same file under another name (a hard link): checked
            return None
        actual = record_of(path)
    except (OSError, ValueError) as error:
        return f"{name} cannot be read: {getattr(error, 'strerror', None) or error}"
    seen.add(identity)
    if actual["crc32"] != record["crc32"]:
        return f"{name} does not match its checksum: its contents changed after it was written"
    return None
