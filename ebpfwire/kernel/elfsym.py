"""Where a function of an executable or shared library sits in its file: what a uprobe
takes. The kernel places a uprobe by file offset, not by address or name."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.constants import P_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from ebpfwire.kernel.errors import LoaderError

LIBRARY_DIRS = ("/lib64", "/usr/lib64", "/lib", "/usr/lib", "/lib/x86_64-linux-gnu",
                "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
                "/usr/lib/aarch64-linux-gnu")
_FUNCTION_TYPES = ("STT_FUNC", "STT_GNU_IFUNC")


def resolve_binary(name: str) -> str:
    """The absolute path of ``name``: a path as given; a bare ``libX.so*`` from
    ``LD_LIBRARY_PATH`` and the usual library directories, another bare name from ``PATH``
    (as libbpf finds them)."""
    if "/" in name:
        found = os.path.abspath(name)
        if not os.path.isfile(found):
            raise LoaderError(f"uprobe target {name!r}: no such file ({found})")
        return found
    if ".so" in name:
        dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
        for d in (*dirs, *LIBRARY_DIRS):
            if os.path.isfile(os.path.join(d, name)):
                return os.path.join(d, name)
        raise LoaderError(f"uprobe target {name!r}: not found in LD_LIBRARY_PATH or "
                          f"{', '.join(LIBRARY_DIRS)}")
    found = shutil.which(name)
    if found is None:
        raise LoaderError(f"uprobe target {name!r}: not found in PATH")
    return os.path.abspath(found)


def symbol_offset(path: str | Path, name: str) -> int:
    """The file offset of function ``name`` of ELF file ``path``: its address in ``.symtab``
    or ``.dynsym`` mapped through the executable ``PT_LOAD`` segment that holds it."""
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            address = _function_address(elf, path, name)
            for seg in elf.iter_segments("PT_LOAD"):
                start, size = seg["p_vaddr"], seg["p_memsz"]
                if seg["p_flags"] & P_FLAGS.PF_X and start <= address < start + size:
                    return address - start + seg["p_offset"]
    except ELFError as exc:
        raise LoaderError(f"{path}: not an ELF file ({exc})") from exc
    except OSError as exc:
        raise LoaderError(f"{path}: {exc.strerror}", exc.errno) from exc
    raise LoaderError(f"{path}: function {name!r} at 0x{address:x} is in no executable "
                      "PT_LOAD segment")


def _function_address(elf: ELFFile, path: str | Path, name: str) -> int:
    """The one address the defined function symbols named ``name`` give; a global one wins
    over local ones of the same name."""
    found: dict[int, str] = {}
    for sec in elf.iter_sections():
        if not isinstance(sec, SymbolTableSection) or sec.name not in (".symtab", ".dynsym"):
            continue
        for sym in sec.get_symbol_by_name(name) or ():
            if (sym["st_info"]["type"] in _FUNCTION_TYPES and sym["st_shndx"] != "SHN_UNDEF"
                    and sym["st_value"]):
                bind = sym["st_info"]["bind"]
                if found.get(sym["st_value"]) != "STB_GLOBAL":
                    found[sym["st_value"]] = bind
    if not found:
        raise LoaderError(f"{path}: no function {name!r} defined in .symtab or .dynsym")
    globals_ = [addr for addr, bind in found.items() if bind == "STB_GLOBAL"]
    choice = globals_ or list(found)
    if len(choice) > 1:
        raise LoaderError(f"{path}: function {name!r} is ambiguous: defined at "
                          f"{', '.join(hex(a) for a in sorted(choice))}; give a file offset")
    return choice[0]
