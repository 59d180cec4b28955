"""What a stored result is: its format version and the key that must match for it to count as a
job's result."""
from __future__ import annotations

import platform

import numpy as np

# 3: one Zarr store per job (chunked like the grid's blocks, zstd and crc32c), opened by xarray;
# 2: one .npy file per array with each file's size and CRC-32 in summary.json
FORMAT_VERSION = 3


def result_key(job) -> dict:
    """What must match for an existing result to count as this job's: the job text, the resolved
    settings, the gradsvc version and the result format."""
    from .. import __version__
    return {"content_hash": job.content_hash, "settings": job.settings.model_dump(),
            "gradsvc_version": __version__, "format": FORMAT_VERSION}


def versions() -> dict:
    import jax
    import jaxlib
    import xarray
    import zarr

    from .. import __version__
    return {"gradsvc": __version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "numpy": np.__version__, "zarr": zarr.__version__, "xarray": xarray.__version__,
            "python": platform.python_version()}
