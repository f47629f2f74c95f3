"""s3fs without its own retry loop, so that :mod:`xarray_precomputed.retry` bounds retries.

s3fs repeats every call up to 5 times (pauses of 0.1 to 0.8 s) when the connection breaks,
times out or the answer cannot be parsed, on top of botocore's retries; a dropped write
was then sent 5 times within each of the policy's attempts. This subclass tries once
(botocore's own retries are switched off in :func:`~xarray_precomputed.remote.filesystem_options`).
Imported only for ``s3://`` URLs.
"""

from __future__ import annotations

import s3fs


class SingleTryS3FileSystem(s3fs.S3FileSystem):
    """:class:`s3fs.S3FileSystem` whose calls are tried once."""

    retries = 1
