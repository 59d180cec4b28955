"""Results as stores: one Zarr store per job, in its folder under `--out` (a local path or an
fsspec URL: `memory://`, `s3://`, `gs://`), opened by xarray.

A job's folder `<out>/<job name>/` is the root of a Zarr v3 group, an xarray Dataset:
  <node>                  each kept node's value over the grid
  d<out>.d<name>          d output / d name for every wrt name: the gradient, or the Jacobian
  d2<out>.d<a>.d<b>       with `order: 2`, the Hessian of every scalar output
  <input>                 the grid inputs as coordinates, in the job's dtype (a product grid: one
                          dimension per input; a zip grid: along `point`); tensor inputs as
                          variables of their own dimensions
  zarr.json ...           Zarr's metadata, consolidated; the attributes hold the job (name,
                          formulas, outputs, wrt, dtype), the verification and `same_as`
  .gradsvc/done/          a marker per finished range of points (resuming reads them)
  results.csv             the grid inputs, scalar values and scalar gradients as a table, for
                          small grids
  summary.json            written last: status, verification, timings, versions, the job's key,
                          and every object's size (`files`); a folder with it is complete
`layout.py` has the naming and dimension rules, `sink.py` the writing.

`gradsvc.load_result(folder)` gives the Dataset (lazily, each variable a dask array);
`xarray.open_zarr(folder)` and `dask.array.from_zarr(folder, component="dz.da")` read it without
gradsvc. Results that are one array (the seed's dz/da and dz/db) are stored once: the second
name is in the attributes' `same_as`, and load_result gives both.

Writing is in place (object stores cannot rename): (re)computing a result first removes its
summary.json; each range's chunks are written and synced before its done marker; a killed run
leaves a store without summary.json, which the next run resumes, computing only the ranges not
done. A result of another job text, settings or gradsvc version, or a damaged one, is cleared
and computed again.

Integrity: summary.json records every object's size (and the metadata's CRC-32); each chunk holds
its own crc32c (zarr's codec). `gradsvc batch` recomputes a damaged result instead of skipping
it, and `load_result` refuses one (see `integrity`).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..job.spec import Job
from .key import FORMAT_VERSION, result_key
from .load import finished_summary, load_result, result_damage
from .place import Place, is_url
from .sink import DONE, ZarrSink, stored_identity
from .summary import CSV_MAX_POINTS, summary_damage

__all__ = ["CSV_MAX_POINTS", "FORMAT_VERSION", "Stored", "Written", "ZarrSink", "done_ranges_count",
           "job_folder",
           "load_result", "remove_stale_temporaries", "result_key", "safe_folder_name",
           "stored_result", "write_json_atomic", "write_result", "finished_summary"]

TMP_MARK = ".tmp-"  # what format 2 wrote results into before renaming them into place


def safe_folder_name(name: str) -> str:
    cleaned = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in name).strip(".")
    return cleaned or "job"


def job_folder(out, job: Job) -> Place:
    """The result folder of `job` under `out` (a path or a URL)."""
    return Place.of(out).child(safe_folder_name(job.name))


@dataclass
class Stored:
    """What a result folder holds for a job: its finished result (`summary`), `damage` (what is
    wrong with it, or with the folder when its summary is unreadable), or `unfinished`: a store an
    interrupted run of this same job left, which a run resumes."""
    summary: dict | None
    damage: str | None
    unfinished: bool = False

    @property
    def complete(self) -> bool:
        return self.summary is not None and self.damage is None


def stored_result(folder, job: Job, verify: bool | None = None) -> Stored:
    """Whether `folder` holds this job's finished result intact. A result of another job text,
    settings or gradsvc version is no damage: it is simply not this job's (Stored(None, None)).
    Sizes are always checked; chunk checksums when `verify` (None: when cheap, see `integrity`)."""
    place = folder if isinstance(folder, Place) else Place.of(folder)
    if not place.exists("summary.json"):
        identity = stored_identity(place)
        return Stored(None, None, unfinished=bool(identity) and identity.get("key") ==
                      result_key(job))
    summary = place.read_json("summary.json")
    if not isinstance(summary, dict):
        return Stored(None, "summary.json is not readable JSON")
    if not (summary.get("complete") and summary.get("key") == result_key(job)):
        return Stored(None, None)
    return Stored(summary, summary_damage(summary) or result_damage(place, summary, verify))


@dataclass
class Written:
    folder: Place
    summary: dict


def write_result(out, job: Job, execute, progress=None) -> Written:
    """Run `execute(job, sink, progress)` into the job's store under `out`, then finish it.

    A folder holding a finished result (being recomputed: forced, damaged, of another job text
    or format) loses its summary.json first and is cleared; one without (an interrupted run's)
    is resumed by the sink when it is this job's."""
    folder = job_folder(out, job)
    if folder.exists("summary.json"):  # recomputed: its done ranges must not survive a kill
        ZarrSink(folder, job).rewind()
    fresh = folder.remove("summary.json")
    if job.settings.keep == "stats":
        return _write_stats(folder, job, execute, progress)
    sink = ZarrSink(folder, job, fresh=fresh)
    done = execute(job, sink, progress)
    return Written(folder, sink.finish(job, done))


def _write_stats(folder: Place, job: Job, execute, progress) -> Written:
    """`keep: stats`: the statistics stream through a `StatsSink` (the Dask executor keeps each
    task's in the folder, and resumes from them; in this process a run starts over); the store
    then holds the group's attributes only, and summary.json the statistics."""
    from .stats import StatsSink, stats_json
    sink = StatsSink(job, checkpoints=folder)
    done = execute(job, sink, progress)
    extra = {"stats": stats_json(job, sink.partial())}
    return Written(folder, ZarrSink(folder, job, fresh=True).finish(job, done, extra))


def done_ranges_count(folder) -> int:
    """How many ranges of points a store holds finished (its done markers): progress of a run
    writing it, or what an interrupted one left."""
    place = folder if isinstance(folder, Place) else Place.of(folder)
    try:
        return sum(1 for key in place.sizes(DONE) if key.startswith(DONE + "/"))
    except OSError:  # not there yet
        return 0


def write_json_atomic(where, data: dict) -> None:
    """A small JSON file (batch.json): renamed into place on a local disk, one put elsewhere
    (an object appears whole or not at all)."""
    if is_url(where):
        place = Place.of(where)
        parent, _, name = place.url.rpartition("/")
        Place.of(parent).write_json(name, data)
        return
    path = Path(where)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_stale_temporaries(out) -> list[str]:
    """Delete what killed runs of earlier formats left behind (`.name.tmp-*` folders, which
    format 2 renamed into place), and a batch.json being written when a batch was killed. A
    killed run of this format leaves its store in place, to be resumed. Returns the result
    names they were for (`big` for `.big.tmp-4242`)."""
    if is_url(out):
        return []
    removed = []
    for entry in sorted(Path(out).glob(f".*{TMP_MARK}*")):
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry.name[1:].split(TMP_MARK)[0])
    return list(dict.fromkeys(removed))
