"""A missing extra is one line naming the extra to install, never a traceback."""

from __future__ import annotations

import subprocess
import sys

from test_cli import ENV, FIXTURES


def _without(module: str, code: str) -> subprocess.CompletedProcess:
    """Run ``code`` where importing ``module`` fails, as on an install without it."""
    return subprocess.run([sys.executable, "-c", f"import sys; sys.modules[{module!r}] = None\n"
                           + code], capture_output=True, text=True, env=ENV, timeout=120)


def test_export_without_pyarrow_names_the_arrow_extra(tmp_path):
    done = _without("pyarrow", "from ebpfwire.cli import main\nsys.exit(main(["
                    f"'export', {str(FIXTURES / 'real-workload.ewcap')!r}, '-o', "
                    f"{str(tmp_path / 'x.parquet')!r}]))")
    assert done.returncode == 2
    assert done.stderr == ("ebpfwire: export needs the arrow extra (pyarrow, numpy): "
                           "pip install '.[arrow]' in a checkout of ebpfwire\n")
    assert not (tmp_path / "x.parquet").exists()


def test_the_other_commands_need_no_extra():
    done = _without("pyarrow", "from ebpfwire.cli import main\nsys.exit(main(['summary', "
                    f"{str(FIXTURES / 'real-workload.ewcap')!r}]))")
    assert done.returncode == 0 and "openat" in done.stdout


def test_importing_the_columnar_modules_without_their_extra_names_it():
    for module, code, extra in (("dask", "import ebpfwire.dask", "dask"),
                                ("pyarrow", "import ebpfwire.arrow", "arrow"),
                                ("pyarrow", "import ebpfwire.export", "arrow"),
                                ("hypothesis", "from ebpfwire.wire import strategies", "fuzz")):
        done = _without(module, code)
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("ImportError: ebpfwire.") and f"needs the {extra} extra" in last
        assert f"pip install '.[{extra}]'" in last, last
