"""The JAX backend: lowering a graph to one jitted, vmapped chunk function, fast math, kernel caches, the plan."""
from .._lazy import submodules_on_demand

__getattr__ = submodules_on_demand(__name__)
