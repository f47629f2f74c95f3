"""Tests of xarray_precomputed (a package, so test modules import their helpers relatively)."""
