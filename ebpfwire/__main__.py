"""``python -m ebpfwire``: the same command line as the ``ebpfwire`` console script."""

import sys

from ebpfwire.cli import main

sys.exit(main())
