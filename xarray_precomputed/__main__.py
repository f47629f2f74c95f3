"""``python -m xarray_precomputed``: the ``precomputed`` command."""

import sys

from .cli import main

sys.exit(main())
