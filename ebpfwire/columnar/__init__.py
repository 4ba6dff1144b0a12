"""Captures as columns: Arrow tables, Parquet export with worker processes, Dask."""

from importlib.util import find_spec


def has_arrow() -> bool:
    """Whether the ``arrow`` extra (pyarrow, numpy) is installed: the commands that count
    from columns read event by event without it, to the same result."""
    return find_spec("pyarrow") is not None and find_spec("numpy") is not None
