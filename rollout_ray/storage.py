"""Filesystems for inputs and outputs: local paths, s3:// and any fsspec URI.

Writes are atomic from a reader's point of view: locally a file is written under a
temporary name and renamed; on object stores a PUT is all-or-nothing. S3 settings come
from the usual AWS environment (AWS_ENDPOINT_URL, AWS_REGION, credentials), so the
same config runs against AWS, MinIO or a test server.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import posixpath
import uuid
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from rollout_ray.retries import Backoff

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Errors from object stores that pass on retry (throttling, resets, 5xx).
_TRANSIENT = (ConnectionError, TimeoutError, OSError)
STORAGE_BACKOFF = Backoff(base_s=0.4, cap_s=5.0)


def canonical(uri: str) -> str:
    """The one spelling of a location, whatever form the user gave it.

    Local paths (relative, `./`, `~`, `file://`, a trailing `/`) become absolute paths;
    `s3a://` becomes `s3://`; a trailing `/` goes. Every name the project stores or
    compares (commit records, listings, sweeps, the coordinator's name) is in this
    form, so two spellings of one file are never taken for two files, and a path
    handed to another process (an actor with another working directory) still means
    the same file.
    """
    protocol, path = _protocol(uri)
    if protocol == "file":
        return _local(path)
    return f"{protocol}://{path.rstrip('/')}"


def split_uri(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for `uri` and the path inside it (canonical, see `canonical`)."""
    protocol, path = _protocol(uri)
    fs = filesystem(protocol)
    return fs, _local(path) if protocol == "file" else path.rstrip("/")


def shown(uri: str) -> str:
    """`uri` as a person would type it here: a local path under the working directory
    relative to it (`outputs/x`), anything else canonical."""
    uri = canonical(uri)
    if "://" not in uri:
        here = os.getcwd()
        if uri == here or uri.startswith(here.rstrip("/") + "/"):
            return os.path.relpath(uri, here)
    return uri


def _local(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def join(base: str, *parts: str) -> str:
    """Join URI parts with '/' whatever the platform."""
    return posixpath.join(base.rstrip("/"), *parts) if "://" in base else os.path.join(base, *parts)


def full_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The canonical URI of `path` on `fs` (what `split_uri` maps back to (fs, path))."""
    if isinstance(fs, LocalFileSystem):
        return _local(path)
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple | list) else fs.protocol
    return canonical(f"{protocol}://{path}")


def _protocol(uri: str) -> tuple[str, str]:
    if "://" in uri:
        protocol, rest = uri.split("://", 1)
        protocol = protocol.lower()
        if protocol in {"file", "local"}:
            return "file", rest
        return ("s3" if protocol in {"s3", "s3a"} else protocol), rest
    return "file", uri


@cache
def filesystem(protocol: str) -> fsspec.AbstractFileSystem:
    """One cached filesystem per protocol, configured from the environment."""
    if protocol == "file":
        return LocalFileSystem()
    if protocol == "s3":
        client_kwargs: dict[str, Any] = {}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            client_kwargs["endpoint_url"] = endpoint
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            client_kwargs["region_name"] = region
        # botocore retries throttling and 5xx itself; `retrying` below covers the rest.
        return fsspec.filesystem(
            "s3",
            client_kwargs=client_kwargs,
            skip_instance_cache=True,
            # Other processes add and compact manifest files: never trust a cached listing.
            use_listings_cache=False,
            config_kwargs={"retries": {"max_attempts": 8, "mode": "adaptive"}},
        )
    return fsspec.filesystem(protocol)


def retrying(fn: Callable[[], T], what: str, attempts: int = 5) -> T:
    """Run `fn`, retrying transient storage errors with exponential backoff."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except FileNotFoundError:
            raise
        except _TRANSIENT as exc:
            if attempt == attempts:
                raise
            log.warning("retrying %s after %s (attempt %d/%d)", what, exc, attempt, attempts)
            STORAGE_BACKOFF.sleep(attempt - 1)
    raise AssertionError("unreachable")


def _durable_temp(path: str, data: bytes) -> str:
    """`data` in a new temporary file beside local `path`, synced to disk; its name."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write `data` so that readers see the old file or the whole new one, never a part."""
    fs, path = split_uri(uri)
    if isinstance(fs, LocalFileSystem):
        tmp = _durable_temp(path, data)
        os.replace(tmp, path)
        return
    retrying(lambda: fs.pipe_file(path, data), f"write {uri}")


def create_exclusive(uri: str, data: bytes) -> bool:
    """Write `data` under `uri` only if nothing is there; False if something is.

    Exactly one of several writers racing for a name wins: locally by hard-linking a
    written temporary file (link fails if the name exists), on S3 by a conditional
    PUT (If-None-Match: *). Other filesystems have no such primitive: a check then a
    write, which is not race-free.
    """
    fs, path = split_uri(uri)
    if isinstance(fs, LocalFileSystem):
        tmp = _durable_temp(path, data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.remove(tmp)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("s3", "s3a"):
        bucket, key = path.split("/", 1)

        def put() -> bool:
            try:
                fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
                return True
            except FileExistsError:
                return False

        return retrying(put, f"create {uri}")
    if retrying(lambda: fs.exists(path), f"stat {uri}"):
        return False
    write_bytes_atomic(uri, data)
    return True


@contextlib.contextmanager
def open_atomic(uri: str):
    """A binary file to stream into; readers see it only once it is whole (locally a
    temporary name renamed at the end; on object stores the upload completes at close).
    Nothing is left if the block raises."""
    fs, path = split_uri(uri)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        return
    f = fs.open(path, "wb")
    try:
        yield f
    except BaseException:
        discard = getattr(f, "discard", None)  # s3fs: abort the multipart upload
        with contextlib.suppress(Exception):
            if discard is not None:
                discard()
        raise
    f.close()


def version_stamp(info: dict[str, Any]) -> str:
    """What changes when a file's content does: its ETag on object stores, else mtime."""
    return str(info.get("ETag") or info.get("etag") or info.get("mtime") or "")


def write_parquet_atomic(uri: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    write_bytes_atomic(uri, buffer.getvalue())


def write_json_atomic(uri: str, value: Any) -> None:
    write_bytes_atomic(uri, json.dumps(value, indent=2, default=str).encode())


def read_bytes(uri: str) -> bytes:
    fs, path = split_uri(uri)
    return retrying(lambda: fs.cat_file(path), f"read {uri}")


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def read_parquet(
    uri: str,
    columns: list[str] | None = None,
    row_group: int | None = None,
    present_only: bool = False,
) -> pa.Table:
    """A Parquet file's table (or one row group of it); `present_only`: of `columns`,
    those the file has.

    Local files are opened by path. A remote one is read through its fsspec file
    without pyarrow's threads: pyarrow 26 threads that read a Python file object can
    abort the interpreter at exit ("terminate called without an active exception").
    """
    fs, path = split_uri(uri)
    local = isinstance(fs, LocalFileSystem)

    def read() -> pa.Table:
        with contextlib.ExitStack() as stack:
            source = path if local else stack.enter_context(fs.open(path, "rb"))
            parquet = stack.enter_context(pq.ParquetFile(source))
            names = columns
            if columns is not None and present_only:
                have = set(parquet.schema_arrow.names)
                names = [c for c in dict.fromkeys(columns) if c in have]
            if row_group is not None:
                return parquet.read_row_group(row_group, columns=names, use_threads=local)
            return parquet.read(columns=names, use_threads=local)

    return retrying(read, f"read {uri}")


def exists(uri: str) -> bool:
    fs, path = split_uri(uri)
    return retrying(lambda: fs.exists(path), f"stat {uri}")


def list_files(uri: str, suffix: str = "") -> list[str]:
    """Full URIs of the files under `uri` (recursively), sorted; [] if it doesn't exist."""
    fs, path = split_uri(uri)
    if not retrying(lambda: fs.exists(path), f"stat {uri}"):
        return []
    found = retrying(lambda: fs.find(path), f"list {uri}")
    return sorted(full_uri(fs, p) for p in found if p.endswith(suffix) and ".tmp-" not in p)


def remove_tree(uri: str) -> None:
    """Delete a folder and everything under it, if it exists."""
    fs, path = split_uri(uri)
    if retrying(lambda: fs.exists(path), f"stat {uri}"):
        retrying(lambda: fs.rm(path, recursive=True), f"remove {uri}")


def remove_empty_dirs(uri: str) -> None:
    """Remove the local folder `uri` and the folders under it if they hold no file (a
    no-op on object stores, which have no folders)."""
    fs, path = split_uri(uri)
    if not isinstance(fs, LocalFileSystem) or not os.path.isdir(path):
        return
    for folder, _, _ in sorted(os.walk(path), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def remove(uri: str) -> None:
    fs, path = split_uri(uri)
    with contextlib.suppress(FileNotFoundError):
        retrying(lambda: fs.rm_file(path), f"remove {uri}")
