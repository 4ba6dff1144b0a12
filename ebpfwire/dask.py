"""``ebpfwire.dask``, the documented path of :mod:`ebpfwire.columnar.dask` (the same module)."""

import sys

from ebpfwire.columnar import dask

sys.modules[__name__] = dask
