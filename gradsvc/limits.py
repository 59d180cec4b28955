"""Named limits, checked before any work or allocation. README's "Safety and limits" lists them.

Each guards a resource a hostile or mistaken job file could exhaust: parser recursion, memory, compile
time. They are module constants so tests and docs refer to one value.
"""
MAX_JOB_FILE_BYTES = 1_000_000  # a job file is read only if it is at most this large
MAX_YAML_NODES = 100_000  # YAML nodes after alias expansion (stops billion-laughs bombs)
MAX_FORMULA_CHARS = 4_000  # characters in one formula
MAX_FORMULA_DEPTH = 200  # nesting depth of one formula's syntax tree (Python's parser recurses)
MAX_GRAPH_NODES = 5_000  # inputs + named nodes in one job
MAX_PRIMITIVE_OPS = 20_000  # primitive operations after formulas are flattened (bounds compile time)
MAX_AXIS_POINTS = 10_000_000  # values along one input axis (each axis is held in memory)
MAX_GRID_POINTS = 1_000_000_000  # points in a whole grid (never materialised, but bounds run time)
MAX_RESULT_BYTES = 4_000_000_000  # values + gradients `run` may hold in memory for one job
MAX_INT_EXPONENT = 64  # `x ** n` with |n| up to this uses exact repeated multiplication (integer_pow)
MAX_NAME_CHARS = 64  # characters in an input or node name
MAX_DATA_FILE_BYTES = 100_000_000  # data files (.npy, .csv) one job reads, in all: each checked before it is read
MAX_TENSOR_ELEMENTS = 10_000_000  # elements of one job's tensor inputs, in all (checked before allocating), and of any one node
MAX_POINT_ELEMENTS = 100_000_000  # numbers all of a graph's nodes hold at one grid point, together
MAX_TENSOR_DIMS = 8  # dimensions of one tensor input
MAX_REFERENCE_NODES = 100_000  # scalar nodes of a tensor job's scalar view the reference checks
MAX_COMPILED_KERNELS = 256  # compiled kernels one process keeps (each holds memory mappings)

# what a job sent to the service may ask of verification, which runs while its client waits
SENT_MAX_VERIFY_POINTS = 10_000  # settings.verify_points
SENT_MAX_FD_POINTS = 1_000  # settings.fd_points
SENT_MAX_VERIFY_BUDGET = 1.0  # settings.verify_budget (a fraction of compile + run time)

ALL = {name: value for name, value in globals().items() if name.startswith(("MAX_", "SENT_MAX_"))}
