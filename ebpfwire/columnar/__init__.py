"""Captures as columns: Arrow tables, Parquet export with worker processes, Dask."""
