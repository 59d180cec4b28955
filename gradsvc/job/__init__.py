"""Job files: safe YAML with locations, the schema and settings, grids, tensor inputs and data files."""
from .._lazy import submodules_on_demand

__getattr__ = submodules_on_demand(__name__)
