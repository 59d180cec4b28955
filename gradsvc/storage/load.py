"""load_result: a finished result as an xarray Dataset, checked before it is trusted."""
from __future__ import annotations

from ..errors import Location, ResultError
from . import integrity
from .key import FORMAT_VERSION
from .place import Place
from .summary import summary_damage


def load_result(where, verify: bool | None = None):
    """A finished result (a job's folder under a `gradsvc batch` --out: a path or an fsspec URL)
    as an `xarray.Dataset`, each variable a lazily loaded dask array.

    A product grid's variables have one dimension per grid input, named after it, with its axis
    (in the job's dtype, as the kernel saw it) as the coordinate; a zip grid's run along `point`,
    with each varying input a coordinate along it. A tensor adds `{name}_0, {name}_1, ...`
    (store.py and layout.py have the rules). Values are named as their nodes, derivatives
    `d{output}.d{name}`, Hessians `d2{output}.d{a}.d{b}`; results stored once for two names are
    given under both. `ds.attrs` holds the summary: status, verify, timings, dtype, versions.

    The store is checked first: every object's size and the metadata's checksums always, and
    every chunk's crc32c with `verify=True`, or by default (`verify=None`) when the store is at
    most `integrity.CHEAP_TO_VERIFY_BYTES`; `verify=False` reads no chunk. A missing, truncated
    or changed object raises `ResultError` naming it.

    >>> ds = load_result("results/seed-chain")      # doctest: +SKIP
    >>> float(ds["de.da"].squeeze())                # doctest: +SKIP
    12.0
    """
    import xarray

    place = where if isinstance(where, Place) else Place.of(where)
    summary = finished_summary(place)
    damage = result_damage(place, summary, verify)
    if damage:
        raise damaged(place, damage)
    try:
        ds = xarray.open_zarr(place.opened, consolidated=True, zarr_format=3)
    except (OSError, ValueError, KeyError) as error:
        raise damaged(place, f"the store cannot be opened ({error})") from None
    for twin, source in summary["same_as"].items():
        ds[twin] = ds[source].copy()
        ds[twin].attrs.update(_twin_attrs(twin, ds[source].attrs))
    ds.attrs = {k: v for k, v in summary.items() if k not in ("files", "variables")}
    return ds


def _twin_attrs(twin: str, attrs: dict) -> dict:
    """`dz.db`'s attributes from those of `dz.da`, the array it shares."""
    if attrs.get("quantity") in ("gradient", "jacobian"):
        return {**attrs, "wrt": twin.rsplit(".d", 1)[1]}
    if attrs.get("quantity") == "hessian":
        a, b = twin.split(".d")[1:]
        return {**attrs, "wrt": [a, b]}
    return dict(attrs)


def result_damage(place: Place, summary: dict, verify: bool | None) -> str | None:
    """What is wrong with the objects of a finished result (whose summary is well formed), or
    None: every object the summary implies recorded, every record's size (and the small ones'
    checksums), then, when asked or cheap, every chunk's crc32c."""
    records = summary.get("files")
    if not isinstance(records, dict) or not records:
        return "summary.json records no files"
    missing = integrity.unrecorded(summary)
    if missing:
        return f"summary.json names {missing} but records no such object"
    damage = integrity.find_damage(place, records)
    if damage is None and integrity.wants_checksums(records, verify):
        damage = integrity.chunk_damage(place, summary["variables"])
    return damage


def finished_summary(place: Place) -> dict:
    """The summary of a finished result in this format, or a ResultError saying why not."""
    if not place.is_folder():
        raise ResultError(f"{place} is not a folder", hint="give the folder of one job inside "
                          "a `gradsvc batch` --out folder")
    summary = place.read_json("summary.json")
    if not isinstance(summary, dict):
        why = ("summary.json is not readable JSON" if place.exists("summary.json") else
               "summary.json is missing")
        raise ResultError(f"{place} is not a finished gradsvc result: {why}",
                          hint="run `gradsvc batch` to produce it (a rerun resumes an "
                          "interrupted one and recomputes a damaged one)")
    key = summary.get("key")
    written = key.get("format") if isinstance(key, dict) else None
    if written != FORMAT_VERSION:
        raise ResultError(f"{place} was written in result format {written}, this gradsvc reads "
                          f"format {FORMAT_VERSION}",
                          hint="rerun the `gradsvc batch` that made it: it rewrites the result")
    damage = summary_damage(summary)
    if damage:
        raise damaged(place, damage)
    return summary


def damaged(place: Place, damage: str) -> ResultError:
    parent = place.url.rpartition("/")[0]
    return ResultError(f"damaged result: {damage}", where=Location(place.url),
                       hint=f"rerun the `gradsvc batch` that made it (--out {parent}): "
                       "it recomputes damaged results")
