"""The JAX backend: the plan of a run, lowering a graph to one jitted, vmapped chunk function, fast
math, kernel caches."""
from .._lazy import submodules_on_demand

__getattr__ = submodules_on_demand(__name__)
