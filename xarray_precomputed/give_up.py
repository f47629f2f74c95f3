"""The errors :class:`~xarray_precomputed.remote.RemoteCaller` raises when it gives up.

Each names the object, what was tried and for how long, and ends with what to check.
"""

from __future__ import annotations

from .errors import StorageError
from .retry import describe


def advice(url: str) -> str:
    """What to check when an endpoint never answered."""
    return (
        f"check the URL ({url}), the network connection and the endpoint, and the "
        "credentials (storage_options such as {'anon': True} for public data, or key/secret, "
        "token, endpoint_url)"
    )


def unreachable(what: str, e: Exception, attempts: int, elapsed: float, url: str) -> StorageError:
    """No answer from the endpoint of ``url`` in ``attempts`` tries."""
    return StorageError(
        f"cannot reach {what}: no answer after {attempts} attempt(s) in {elapsed:.1f} s; "
        f"last error: {describe(e)}. {advice(url)}"
    )


def exhausted(
    verb: str, what: str, e: Exception, attempts: int, elapsed: float, lost: int = 0
) -> StorageError:
    """The retry policy's attempts or time spent on transient failures (and ``lost`` races)."""
    races = f" (and {lost} lost to concurrent writers)" if lost else ""
    return StorageError(
        f"cannot {verb} {what}: gave up after {attempts} attempt(s){races} in {elapsed:.1f} s; "
        f"last error: {describe(e)} (retry limits: storage_options['retry'])"
    )


def lost_races(verb: str, what: str, lost: int) -> StorageError:
    """Every one of ``lost`` attempts found the object changed by another writer meanwhile."""
    return StorageError(
        f"cannot {verb} {what}: gave up after {lost} attempts lost to concurrent writers of "
        "the same object (regions aligned to the shard boxes, or to the chunks when unsharded, "
        "share no object between writers)"
    )
