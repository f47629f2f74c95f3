"""Resumable writes: a write started again stores only what is missing or different.

Encoding is deterministic (the same data always gives the same bytes), so a write
killed part-way and run again with ``resume=True`` encodes everything once more but
compares each object with what is stored and skips the put when they match: on local
disk by size and then bytes, on S3 by the ETag (the MD5 of a single-part object), on GCS
by the stored MD5, elsewhere by reading the object back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Any

from .errors import StorageError
from .metadata import VolumeInfo
from .storage import Store, StreamedObject


class ResumingStore(Store):
    """A :class:`Store` whose puts skip objects already stored with the same bytes.

    >>> import tempfile
    >>> s = ResumingStore(tempfile.mkdtemp())
    >>> s.put("a", b"xyz")
    True
    >>> s.holds("a", b"xyz"), s.holds("a", b"xy"), s.holds("b", b"")
    (True, False, False)
    """

    def put(self, key: str, data: bytes | bytearray | memoryview | StreamedObject) -> bool:
        if isinstance(data, StreamedObject):  # compared whole with what is stored
            data = data.to_bytes()
            if data is None:
                return False
        if not self.holds(key, data):
            return super().put(key, data)
        return True

    def holds(self, key: str, data: bytes | bytearray | memoryview) -> bool:
        """Whether ``key`` is stored with exactly ``data``."""
        data = memoryview(data).cast("B")
        if self.is_local:
            path = self.path(key)
            try:
                if os.path.getsize(path) != len(data):
                    return False
                with open(path, "rb") as f:
                    return f.read() == data
            except OSError:
                return False
        try:
            info = self.object_info(key)  # under the retry policy
        except FileNotFoundError:
            return False
        except StorageError:
            raise  # the retries gave up: reading the object back would fare no better
        except Exception:  # no info from this filesystem: compare the bytes
            info = {}
        if info.get("size") is not None and int(info["size"]) != len(data):
            return False
        md5 = hashlib.md5(data)
        etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
        if etag and "-" not in etag and len(etag) == 32:  # S3: MD5 of a single-part put
            return etag == md5.hexdigest()
        if info.get("md5Hash"):  # GCS
            return info["md5Hash"] == base64.b64encode(md5.digest()).decode()
        return self.get(key) == data


def same_info(store: Store, info: VolumeInfo) -> bool:
    """Whether ``store`` already holds this ``info`` (as written by an earlier run)."""
    raw = store.get("info")
    if raw is None:
        return False
    try:
        stored: Any = VolumeInfo.from_json(json.loads(raw), store.url).to_json()
    except Exception:
        return False
    return stored == info.to_json()


__all__ = ["ResumingStore", "same_info"]
