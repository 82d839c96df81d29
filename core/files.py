"""Writing a file so that readers see the old version or the new one, never half of either."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_file(path: os.PathLike[str] | str, mode: str = "w",
                sync_folder: bool = False) -> Iterator[IO[Any]]:
    """Open a hidden temporary file beside `path` (a dot name: never exported or taken for a
    run); on a clean exit fsync it and rename it over `path`. `sync_folder` also fsyncs the
    folder, so the rename itself survives a power cut. On an error the temporary file goes."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if sync_folder:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomically(path: os.PathLike[str] | str, data: str | bytes) -> None:
    """`data` into `path` through `atomic_file`."""
    with atomic_file(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
