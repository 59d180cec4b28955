"""The formula language: the op tables, the parser (an ast allow-list) and the graph IR with shapes."""
from .._lazy import submodules_on_demand

__getattr__ = submodules_on_demand(__name__)
