"""The one exception type for bytes that do not follow the wire format."""

from __future__ import annotations

from ebpfwire.errors import EbpfwireError

#: Every kind of damage the decoders tell apart; both decoders report the same kind at
#: the same offset for the same input.
KINDS = (
    "short-header",         # fewer bytes than the context layout needs
    "missing-argument",     # the sample ended where argnum promised another argument
    "bad-tag",              # a tag byte that is not an argument type the wire carries
    "truncated",            # a payload or field that runs past the end of the sample
    "bad-size",             # a string size that is negative or above 4096
    "unterminated-string",  # a string whose last byte is not NUL
    "unterminated-array",   # an argv array without its closing tag
    "trailing-bytes",       # bytes after the last argument that are not 0..7 zeros of padding
    "orphan-tag",           # (lenient only) a tag whose payload the writer never wrote
    "bad-hash",             # a hash trailer (layout hash, hash == 1) that does not read
)


class DecodeError(EbpfwireError, ValueError):
    """Bytes that do not decode: what was expected, what was found, and the byte offset."""

    def __init__(self, kind: str, offset: int, expected: str, found: str):
        self.kind = kind
        self.offset = offset
        self.expected = expected
        self.found = found
        super().__init__(f"{kind} at byte offset {offset}: expected {expected}, found {found}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DecodeError):
            return NotImplemented
        return (self.kind, self.offset) == (other.kind, other.offset)

    def __hash__(self) -> int:
        return hash((self.kind, self.offset))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "offset": self.offset, "message": str(self)}
