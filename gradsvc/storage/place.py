"""Where results live: a folder on the local disk or under any fsspec URL (`memory://`, `s3://`,
`gs://`, where the user has the filesystem package), read and written through fsspec alike.

On a local disk what is written is also synced (`os.fsync` of files and of the folders naming
them): a result is declared complete only once its bytes are on the disk. Object stores make each
object durable when its write returns, and have no folders to sync.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import fsspec


def is_url(where) -> bool:
    return isinstance(where, str) and "://" in where


@dataclass(frozen=True)
class Place:
    """A folder: `url` as given (a path or a URL: what messages show), the fsspec filesystem
    behind it and the folder's path there."""
    url: str
    fs: fsspec.AbstractFileSystem
    root: str

    @classmethod
    def of(cls, where: str | os.PathLike) -> Place:
        url = str(where)
        fs, root = fsspec.core.url_to_fs(url if is_url(url) else str(Path(url).absolute()))
        return cls(url.rstrip("/") or url, fs, root.rstrip("/"))

    @property
    def local(self) -> bool:
        return "file" in _protocols(self.fs)

    @property
    def in_memory(self) -> bool:
        """memory://: one process's, which no other process reaches."""
        return "memory" in _protocols(self.fs)

    @property
    def opened(self) -> str:
        """What zarr and xarray open: an absolute path (the same from any working folder: a
        Dask worker's too), or the URL."""
        return self.root if self.local else self.url

    @property
    def name(self) -> str:
        return self.root.rsplit("/", 1)[-1]

    def child(self, name: str) -> Place:
        return Place(f"{self.url}/{name}", self.fs, f"{self.root}/{name}")

    def path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def __str__(self) -> str:
        return self.url

    # --- reading ---

    def is_folder(self) -> bool:
        return self.fs.isdir(self.root)

    def exists(self, key: str) -> bool:
        return self.fs.exists(self.path(key))

    def read(self, key: str) -> bytes:
        return self.fs.cat_file(self.path(key))

    def read_json(self, key: str):
        """The JSON object stored at `key`, or None when it is missing or not JSON."""
        try:
            return json.loads(self.read(key))
        except (OSError, ValueError):
            return None

    def sizes(self, under: str = "") -> dict[str, int]:
        """Every object under the folder (or under `under` in it): {key relative to the folder:
        bytes}, from one listing."""
        found = self.fs.find(self.path(under), detail=True)
        prefix = self.root + "/"
        return {path[len(prefix):]: info["size"] for path, info in found.items()
                if path.startswith(prefix) and info.get("type") != "directory"}

    # --- writing ---

    def write(self, key: str, data: bytes) -> None:
        """One object, synced to the disk on a local filesystem."""
        path = self.path(key)
        if not self.local:
            self.fs.pipe_file(path, data)
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        sync_folder(Path(path).parent)

    def write_json(self, key: str, data) -> None:
        self.write(key, json.dumps(data, indent=2, allow_nan=False).encode("utf-8"))

    def remove(self, key: str) -> bool:
        """Removes one object; whether it was there."""
        try:
            self.fs.rm_file(self.path(key))
        except FileNotFoundError:
            return False
        if self.local:
            sync_folder(Path(self.path(key)).parent)
        return True

    def remove_folder(self, key: str) -> None:
        """Removes the folder `key` inside this one and everything in it, if it is there."""
        if self.exists(key):
            self.fs.rm(self.path(key), recursive=True)

    def clear(self) -> None:
        """Removes the folder and everything in it."""
        if self.fs.exists(self.root):
            self.fs.rm(self.root, recursive=True)

    def settle(self, keys) -> dict[str, int]:
        """The sizes of objects another library (zarr) wrote, {key: bytes}; on a local disk each
        is synced first, and so is every folder on their way up to this one, each once."""
        if not self.local:
            return {key: self.fs.size(self.path(key)) for key in keys}
        sizes, folders = {}, {self.root}
        for key in keys:
            sizes[key] = sync_file(Path(self.path(key)))
            parts = key.split("/")[:-1]
            folders.update(self.path("/".join(parts[:k])) for k in range(1, len(parts) + 1))
        for folder in sorted(folders, key=len, reverse=True):
            sync_folder(Path(folder))
        return sizes


def _protocols(fs) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def sync_file(path: Path) -> int:
    """fsync of a file written elsewhere (Linux flushes a file's pages through any descriptor);
    returns its size."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
