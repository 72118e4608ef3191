"""Atomic file writes (a file is replaced whole or not at all), and the JSON files results are saved as."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable
from typing import IO, Any, TypeVar

T = TypeVar("T")

__all__ = ["atomic_write", "from_file", "read_json", "save_figure", "write_json"]


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], Any], *, binary: bool = False) -> None:
    """Call ``write(file)`` on a new temporary file beside ``path``, then rename it to ``path``.

    On any error (also KeyboardInterrupt) the temporary file is removed and a
    file already at ``path`` is left as it was. The new file gets the
    permissions a plain ``open(path, "w")`` would give it (the umask applies).
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as err:  # a missing folder, no permission: name the path given, not the temporary file
        raise type(err)(err.errno, err.strerror, path) from None
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_figure(fig: Any, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """``fig.savefig(path, **kwargs)`` through :func:`atomic_write` (the format from the path's extension)."""
    suffix = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    kwargs.setdefault("format", suffix or None)
    atomic_write(path, lambda f: fig.savefig(f, **kwargs), binary=True)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """``data`` as JSON (no NaN or Infinity), written through :func:`atomic_write`."""
    text = json.dumps(data, indent=1, allow_nan=False)
    atomic_write(path, lambda f: f.write(text))


def read_json(path: str | os.PathLike[str]) -> Any:
    """A JSON file's data; bad JSON, bad UTF-8, NaN/Infinity or absurd nesting raise ``ValueError`` naming the file."""
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as err:
            raise ValueError(f"{os.fspath(path)} is not valid JSON: {err}") from err


def from_file(build: Callable[[Any], T], path: str | os.PathLike[str]) -> T:
    """``build(data)`` of the JSON file at ``path``; a ``ValueError`` of ``build`` is raised again naming the file."""
    data = read_json(path)
    try:
        return build(data)
    except ValueError as err:
        raise ValueError(f"{os.fspath(path)}: {err}") from err


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed (save() writes non-finite numbers as null)")
