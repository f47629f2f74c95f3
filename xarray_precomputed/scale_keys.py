"""Which scale keys stay inside the volume root.

A scale's ``key`` is a path relative to the volume URL. The writer refuses any key
that could leave the volume or that other tools would read differently; the
reader refuses keys that would leave the volume, so an ``info`` from elsewhere
cannot make us read (or a later write touch) files outside it.
"""

from __future__ import annotations

import re
from typing import Any

# "C:", "s3:", "gs:", "file:": a drive letter or a URL scheme before the first "/".
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def key_problem(key: Any, *, strict: bool = True) -> str | None:
    """Why ``key`` is not a safe relative path, or ``None`` when it is.

    ``strict`` (the writer) also refuses ``.`` and empty components (``a//b``,
    a trailing ``/``), which readers resolve differently.

    >>> key_problem("8_8_40"), key_problem("s0/data")
    (None, None)
    >>> key_problem("../other")
    "has a '..' component, which leaves the volume root"
    >>> key_problem("8_8_40/", strict=False) is None, key_problem("8_8_40/") is None
    (True, False)
    """
    if not isinstance(key, str):
        return f"is a {type(key).__name__}, not a string"
    if not key:
        return "is empty"
    bad = [c for c in key if ord(c) < 32 or ord(c) == 127]
    if bad:
        return f"contains the control character {bad[0]!r}"
    if "\\" in key:
        return "contains a backslash, a path separator on Windows"
    if key.startswith("/") or key.startswith("~"):
        return "is an absolute path"
    if _SCHEME.match(key):
        return "starts with a URL scheme or drive letter"
    parts = key.split("/")
    if ".." in parts:
        return "has a '..' component, which leaves the volume root"
    if strict and any(p in ("", ".") for p in parts):
        return "has an empty or '.' component"
    return None


__all__ = ["key_problem"]
