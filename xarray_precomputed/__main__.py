"""``python -m xarray_precomputed demo``."""

import sys

from .demo import main

sys.exit(main())
