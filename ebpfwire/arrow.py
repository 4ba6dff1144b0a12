"""``ebpfwire.arrow``, the documented path of :mod:`ebpfwire.columnar.arrow` (the same module)."""

import sys

from ebpfwire.columnar import arrow

sys.modules[__name__] = arrow
