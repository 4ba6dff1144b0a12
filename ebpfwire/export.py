"""``ebpfwire.export``, the documented path of :mod:`ebpfwire.columnar.export` (the same module)."""

import sys

from ebpfwire.columnar import export

sys.modules[__name__] = export
