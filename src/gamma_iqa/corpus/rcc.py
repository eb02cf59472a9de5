"""A reader of Qt resource bundles (`.rcc`), the files in which gcompris-qt-data ships its images.

Our own code: there is no maintained Python reader of `.rcc` bundles (Qt's own `rcc` tool writes them and Qt reads
them at run time; PySide and PyQt only register a bundle with a running Qt application, they do not list its files),
and the format is small and stable. Written from the format's description:

Header (big-endian): "qres", version, tree offset, data offset, names offset (version >= 3: a flags word follows).
Tree: nodes of 14 bytes (version 1) or 22 (a last-modified u64 appended): name offset u32, flags u16, then for a
directory (flag 2) child count u32 and first child index u32, for a file country u16, language u16, data offset u32.
Names: length u16 (UTF-16 units), hash u32, UTF-16BE text. Data: size u32 then the bytes; flag 1 (zlib) bytes are
a u32 uncompressed size followed by a zlib stream; flag 4 is zstd, which this reader refuses.
"""

from __future__ import annotations

import struct
import zlib

__all__ = ["parse_rcc"]

RCC_DIRECTORY, RCC_ZLIB, RCC_ZSTD = 2, 1, 4


class _Bundle:
    """The parsed header of one bundle, and its node, name and payload readers."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 20 or data[:4] != b"qres":
            raise ValueError("not a Qt resource bundle (no 'qres' magic)")
        version, self.tree, self.payload, self.names = struct.unpack(">IIII", data[4:20])
        if not 1 <= version <= 3:
            raise ValueError(f"unsupported rcc version {version}")
        self.data = data
        self.node_size = 14 if version == 1 else 22

    def name(self, offset: int) -> str:
        """The name stored at `offset` in the names table."""
        (length,) = struct.unpack_from(">H", self.data, self.names + offset)
        start = self.names + offset + 6  # after the length and the hash
        return self.data[start : start + 2 * length].decode("utf-16-be")

    def blob(self, path: str, flags: int, data_offset: int) -> bytes:
        """A file's uncompressed bytes; `ValueError` for zstd entries or a wrong uncompressed size."""
        (size,) = struct.unpack_from(">I", self.data, self.payload + data_offset)
        blob = self.data[self.payload + data_offset + 4 : self.payload + data_offset + 4 + size]
        if flags & RCC_ZSTD:
            raise ValueError(f"{path}: zstd-compressed rcc entries are not supported")
        if flags & RCC_ZLIB:
            (expected,) = struct.unpack_from(">I", blob)
            blob = zlib.decompress(blob[4:])
            if len(blob) != expected:
                raise ValueError(f"{path}: {len(blob)} bytes uncompressed, header says {expected}")
        return blob

    def walk(self, index: int, prefix: str, depth: int, files: dict[str, bytes]) -> None:
        """Add the files under tree node `index` (path `prefix`) to `files`."""
        if depth > 64:
            raise ValueError("rcc tree too deep (a cycle?)")
        offset = self.tree + index * self.node_size
        name_offset, flags = struct.unpack_from(">IH", self.data, offset)
        path = prefix + self.name(name_offset) if index else ""
        if flags & RCC_DIRECTORY:
            count, first = struct.unpack_from(">II", self.data, offset + 6)
            for child in range(first, first + count):
                self.walk(child, path + "/" if path else "", depth + 1, files)
            return
        (data_offset,) = struct.unpack_from(">I", self.data, offset + 10)
        files[path] = self.blob(path, flags, data_offset)


def parse_rcc(data: bytes) -> dict[str, bytes]:
    """Read every file of a Qt .rcc bundle.

    Args:
        data: The bundle's bytes.

    Returns:
        {path: uncompressed bytes}, paths joined with '/'.

    Raises:
        ValueError: Not a bundle, an unsupported version, a zstd entry, a corrupt zlib entry or a cyclic tree.
    """
    files: dict[str, bytes] = {}
    _Bundle(data).walk(0, "", 0, files)
    return files
