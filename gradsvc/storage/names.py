"""File names read from somewhere not to be trusted (a summary on disk, a request's path, a
service's listing): one check that a name stays inside the folder it is relative to."""
from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath


def stays_inside(name: str) -> bool:
    """A relative, '/'-separated name that cannot leave its folder by itself: not empty, no NUL
    or backslash, not absolute, no drive, and no empty, `.` or `..` part. (A link on disk can
    still lead out: resolve the path and compare where it matters.)"""
    return (bool(name) and "\0" not in name and "\\" not in name
            and not PurePosixPath(name).is_absolute() and not PureWindowsPath(name).drive
            and all(part not in ("", ".", "..") for part in name.split("/")))
