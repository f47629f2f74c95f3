"""Volume URLs in one canonical form: the key under which a volume is opened, cached,
linked and written."""

from __future__ import annotations

import os
from pathlib import Path, PurePath

from .errors import StorageError

_PREFIX = "precomputed://"


def normalize_url(url: str | os.PathLike) -> str:
    """Canonical form of a volume URL: no ``precomputed://`` prefix, no trailing ``/``.

    Local paths become absolute paths; other URLs keep their protocol.

    >>> normalize_url("precomputed://gs://bucket/vol/")
    'gs://bucket/vol'
    >>> normalize_url("")
    Traceback (most recent call last):
    ...
    xarray_precomputed.errors.StorageError: empty volume URL '': give a path or a URL such as gs://bucket/volume
    """
    if isinstance(url, PurePath):
        url = str(url)
    url = os.fspath(url)
    if url.startswith(_PREFIX):
        url = url[len(_PREFIX) :]
    if url.startswith("file://"):
        url = url[len("file://") :]
    if not url.strip() or url.endswith("://"):
        # an empty path would be the working directory: never the volume meant
        raise StorageError(
            f"empty volume URL {url!r}: give a path or a URL such as gs://bucket/volume"
        )
    if "://" not in url:
        return str(Path(url).expanduser().absolute()).rstrip("/") or "/"
    return url.rstrip("/")
