"""Result stores: one Zarr store per job on any fsspec URL, resumable, checked; load_result."""
from .._lazy import submodules_on_demand

__getattr__ = submodules_on_demand(__name__)
