"""The views people read: tables and JSON, explain, the graph picture, plots."""
from .._lazy import submodules_on_demand

__getattr__ = submodules_on_demand(__name__)
