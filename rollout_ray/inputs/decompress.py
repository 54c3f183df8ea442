"""Decompressing an input file while knowing where, if anywhere, it breaks.

Reading a compressed file through its codec's file object hides the two ways it can
be bad: a file cut short reads as a shorter file with zstd (the rest of the rows
vanish with no error), and as an EOFError with the stdlib codecs (which the CLI
framework took for the end of the user's input: a bare "Aborted."). Here the
compressed bytes are read in chunks and fed to the codec's own decompressor, so that
a file cut short (the last stream never reached its end marker) and corrupt data (the
decompressor refused a chunk) are both told apart from storage errors, and reported
with the compressed byte offset where the data stopped making sense.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from rollout_ray import storage

#: Compressed bytes fed to the decompressor at a time: the granularity of a reported
#: offset of corrupt data.
CHUNK = 64 << 10
#: Most decompressed bytes the stdlib codecs hand back at a time (memory stays bounded
#: however well the data compresses).
OUT_BLOCK = 16 << 20


class BrokenStream(Exception):
    """The compressed data stops making sense at compressed byte `offset`.

    `keep` is how many decompressed bytes can be trusted. Data cut short decompresses
    correctly up to the cut: all of it (`keep` is None). Corrupt data is noticed only
    after the damage (a wrong bit decodes to plausible text until a structure or a
    checksum fails, gzip checks only at a stream's end): nothing of the damaged stream
    can be trusted, only the streams before it (files of many streams, as bgzip, pigz
    and pzstd write, keep the others).
    """

    def __init__(self, reason: str, offset: int, keep: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.offset = offset
        self.keep = keep


def decompressed(uri: str, codec: str) -> Iterator[bytes]:
    """The decompressed bytes of the file at `uri`, block by block.

    Concatenated streams (gzip members, bz2/xz streams, zstd frames) are read as one,
    as the command-line tools read them; zero bytes after the last stream are padding.

    Raises:
        BrokenStream: after the last block read, when the file is cut short or corrupt.
        OSError: storage failed after retries (the file may be fine).
    """
    fs, path = storage.split_uri(uri)
    size = int(storage.retrying(lambda: fs.info(path), f"stat {uri}")["size"])
    with fs.open(path, "rb") as raw:
        offset = 0
        stream = _Stream(codec)
        while True:
            chunk = storage.retrying(lambda: raw.read(CHUNK), f"read {uri}")
            if not chunk:
                break
            start, offset = offset, offset + len(chunk)
            data = chunk
            while data:
                try:
                    yield from stream.feed(data, offset - len(data))
                except Exception as exc:  # each codec's own error class
                    where = f"compressed bytes {start}-{offset} of {size}"
                    raise BrokenStream(
                        f"corrupt {codec} data, found in {where} ({type(exc).__name__}: "
                        f"{exc}); the stream it is in (from compressed byte {stream.began_at}) "
                        "can't be trusted",
                        start,
                        stream.began_out,
                    ) from None
                data = stream.rest()
        if stream.open:
            raise BrokenStream(
                f"the {codec} stream is cut short: the file ends at compressed byte {size} "
                "before the stream's end marker",
                size,
            )


class _Stream:
    """One codec's decompressor, started again for each concatenated stream."""

    def __init__(self, codec: str):
        self.codec = codec
        self._new: Callable[[], Any] = {
            "gzip": lambda: zlib.decompressobj(wbits=16 + zlib.MAX_WBITS),
            "bz2": bz2.BZ2Decompressor,
            "xz": lambda: lzma.LZMADecompressor(lzma.FORMAT_AUTO),
            "lzma": lambda: lzma.LZMADecompressor(lzma.FORMAT_AUTO),
            "zstd": _zstd,
        }[codec]
        self._obj: Any = None
        self._rest = b""
        self.produced = 0  # decompressed bytes handed out
        self.began_at = 0  # compressed byte where the current stream began
        self.began_out = 0  # decompressed bytes handed out before it

    @property
    def open(self) -> bool:
        """Whether a stream has begun and not reached its end marker."""
        return self._obj is not None and not self._obj.eof

    def feed(self, data: bytes, at: int) -> Iterator[bytes]:
        """Decompressed output of `data` (which starts at compressed byte `at`); what
        follows a stream's end is kept for `rest` (the next stream, or padding)."""
        self._rest = b""
        if self._obj is None or self._obj.eof:
            stripped = data.lstrip(b"\0")  # padding between or after streams
            if not stripped:
                return
            at, data = at + len(data) - len(stripped), stripped
            self._obj = self._new()
            self.began_at, self.began_out = at, self.produced
        for out in self._decompress(self._obj, data):
            self.produced += len(out)
            yield out
        if self._obj.eof:
            self._rest = self._obj.unused_data

    def _decompress(self, obj: Any, data: bytes) -> Iterator[bytes]:
        if self.codec == "gzip":
            while not obj.eof:
                out = obj.decompress(data, OUT_BLOCK)
                data = obj.unconsumed_tail
                yield out
                if not data and len(out) < OUT_BLOCK:
                    break  # all input taken and no output held back
        elif self.codec == "zstd":
            yield obj.decompress(data)
        else:
            yield obj.decompress(data, OUT_BLOCK)
            while not obj.eof and not obj.needs_input:
                yield obj.decompress(b"", OUT_BLOCK)

    def rest(self) -> bytes:
        rest, self._rest = self._rest, b""
        return rest


def _zstd() -> Any:
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj()
