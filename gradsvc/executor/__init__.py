"""Executors: where a plan's point ranges run. In this process (`gradsvc.api.execute`), or as
tasks on a Dask cluster (`dask_cluster`): the same plan, the same blocks, the same store."""
