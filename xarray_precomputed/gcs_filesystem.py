"""gcsfs without its own retry loop, so that :mod:`xarray_precomputed.retry` bounds retries.

gcsfs retries every request up to 6 times with pauses of 1, 2, 4, 8 and 16 s, a number
fixed when the class is defined; an unreachable endpoint then takes about a minute to fail
and transient errors are retried twice over. This subclass sends each request once.
Imported only for ``gs://`` URLs (gcsfs is slow to import).
"""

from __future__ import annotations

import gcsfs


class SingleTryGCSFileSystem(gcsfs.GCSFileSystem):
    """:class:`gcsfs.GCSFileSystem` whose requests are tried once."""

    # The undecorated coroutine under gcsfs's ``@retry_request``.
    _request = gcsfs.GCSFileSystem._request.__wrapped__
