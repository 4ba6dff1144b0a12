"""Wire strings as Python text and back, losslessly, and as safe text for a terminal.

Anything a traced process controls (paths, argv, comm) can hold any byte: :func:`text` keeps
every byte (undecodable ones as surrogates), :func:`escape` and :func:`printable` make sure
none of it can move a cursor or forge a line when shown.
"""

from __future__ import annotations

import signal


def text(raw: bytes) -> str:
    """Bytes from the wire as str, losslessly (UTF-8, undecodable bytes as surrogates)."""
    return raw.decode("utf-8", "surrogateescape")


def raw(value: str) -> bytes:
    """The exact wire bytes of a string that :func:`text` produced."""
    return value.encode("utf-8", "surrogateescape")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def escape(value: str) -> str:
    """A wire string for a terminal: non-UTF-8 bytes and control characters as escapes."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return value
    out = []
    for char in value:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def printable(text: str) -> str:
    """Text for a terminal as it is, except control and format characters (ESC, newline,
    bidi overrides) and undecodable bytes, shown as escapes: nothing from a capture can move
    the cursor or forge a line. Unlike :func:`escape`, quotes and backslashes stay as they are.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else escape(char) for char in text)


def quote(value: str) -> str:
    return '"' + escape(value) + '"'


def exit_status_text(status: int) -> str:
    """do_exit's retval is a wait(2) status: exit code << 8, or the fatal signal (0x80 set
    when it dumped core, as strace says)."""
    if status & 0x7F == 0:
        return f"exited with {(status >> 8) & 0xFF}"
    number = status & 0x7F
    core = " (core dumped)" if status & 0x80 else ""
    try:
        return f"killed by {signal.Signals(number).name}{core}"
    except ValueError:
        return f"killed by signal {number}{core}"
