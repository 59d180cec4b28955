"""Result folders on disk: atomic, streamed, checksummed; load_result."""
from .._lazy import submodules_on_demand

__getattr__ = submodules_on_demand(__name__)
