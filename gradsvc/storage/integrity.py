"""What is stored is checked before it is trusted: every object's size, metadata checksums, and
the chunks' own crc32c.

A finished result records `{key: {"bytes": n}}` for every object of its store in summary.json
(`files`), and `"crc32"` too for the small ones gradsvc reads whole (the Zarr metadata, results.csv,
the done markers). Chunk data carries zarr's `crc32c` codec instead: each chunk holds the checksum
of its own bytes, checked whenever it is read. Readers check every recorded object's size always
(one listing), the small objects' CRC-32 always (a few kB), and read every chunk through zarr,
which checks its crc32c, when asked or when the store is small enough to read in a blink
(`CHEAP_TO_VERIFY_BYTES`).
"""
from __future__ import annotations

import itertools
import math
import zlib
from .names import stays_inside

# Up to this many recorded bytes, chunks are read and checked even unasked: that costs less than
# starting the JAX that would rerun the job
CHEAP_TO_VERIFY_BYTES = 64 * 2**20


def record(data: bytes, checksum: bool) -> dict:
    return {"bytes": len(data), "crc32": zlib.crc32(data)} if checksum else {"bytes": len(data)}


def is_chunk(key: str) -> bool:
    """A chunk of a variable (`z/c/0/3`, `s/c` for a 0-d one), as zarr's default v3 keys name
    them; anything else is metadata or gradsvc's own small objects."""
    parts = key.split("/")
    return len(parts) >= 2 and parts[1] == "c"


def recorded_bytes(records: dict[str, dict]) -> int:
    return sum(r["bytes"] for r in records.values() if _well_formed(r))


def wants_checksums(records: dict[str, dict], verify: bool | None) -> bool:
    """`verify` True or False decides; None checks the chunks when that is cheap."""
    if verify is None:
        return recorded_bytes(records) <= CHEAP_TO_VERIFY_BYTES
    return verify


def expected_chunks(name: str, shape: list[int], chunks: list[int]) -> list[str]:
    """The keys of every chunk of a variable (zarr v3's default encoding, `/`-separated)."""
    counts = [math.ceil(n / c) for n, c in zip(shape, chunks)]
    if not counts:
        return [f"{name}/c"]
    return [f"{name}/c/" + "/".join(map(str, index))
            for index in itertools.product(*(range(n) for n in counts))]


def unrecorded(summary: dict) -> str | None:
    """The first object the summary's own variables imply that `files` does not record: a record
    removed together with its object is damage too."""
    records = summary["files"]
    named = ["zarr.json"]
    for name, v in summary["variables"].items():
        named.append(f"{name}/zarr.json")
        named.extend(expected_chunks(name, v["shape"], v["chunks"]))
    return next((key for key in named if key not in records), None)


def find_damage(place, records: dict[str, dict]) -> str | None:
    """The first thing wrong with the recorded objects of `place` (sizes, then the checksums of
    the small ones), in words, or None."""
    for name, rec in records.items():
        if not stays_inside(name) or not _well_formed(rec):  # a summary on disk: trust nothing
            return f"summary.json's record of {name!r} is not an object record of this result"
    try:
        sizes = place.sizes()
    except OSError as error:
        return f"{place} cannot be listed: {getattr(error, 'strerror', None) or error}"
    for name, rec in records.items():
        problem = _size_problem(sizes, name, rec["bytes"])
        if problem:
            return problem
    for name, rec in records.items():
        if "crc32" in rec:
            problem = _checksum_problem(place, name, rec)
            if problem:
                return problem
    return None


def chunk_damage(place, variables: dict[str, dict]) -> str | None:
    """Reads every chunk of every variable through zarr, which checks each one's crc32c; the
    first that fails, in words, or None. One chunk in memory at a time."""
    import zarr
    group = zarr.open_group(place.opened, mode="r", zarr_format=3)
    for name in variables:
        array = group[name]
        for index in itertools.product(*(range(n) for n in array.cdata_shape)):
            try:
                array.get_block_selection(index)
            except Exception as error:  # a codec's refusal: crc32c, zstd, a wrong size
                key = f"{name}/{array.metadata.encode_chunk_key(index)}"
                why = ("does not match its checksum (crc32c): its contents changed after it "
                       "was written") if "checksum" in str(error) else f"cannot be read ({error})"
                return f"{key} {why}"
    return None


def _well_formed(rec) -> bool:
    return (isinstance(rec, dict) and isinstance(rec.get("bytes"), int)
            and isinstance(rec.get("crc32", 0), int))


def _size_problem(sizes: dict[str, int], name: str, expected: int) -> str | None:
    size = sizes.get(name)
    if size is None:
        return f"{_missing_part(sizes, name)} is missing"
    if size < expected:
        return f"{name} is truncated: {size:,} bytes, expected {expected:,}"
    if size > expected:
        return f"{name} is too long: {size:,} bytes, expected {expected:,}"
    return None


def _missing_part(sizes: dict[str, int], name: str) -> str:
    """A missing object's variable (`dz.da/`) when all of it is gone, else the object itself."""
    top = name.split("/")[0] + "/"
    if "/" in name and not any(key.startswith(top) for key in sizes):
        return top
    return name


def _checksum_problem(place, name: str, rec: dict) -> str | None:
    try:
        data = place.read(name)
    except OSError as error:
        return f"{name} cannot be read: {getattr(error, 'strerror', None) or error}"
    if zlib.crc32(data) != rec["crc32"]:
        return f"{name} does not match its checksum: its contents changed after it was written"
    return None
