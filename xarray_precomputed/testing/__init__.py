"""Testing helpers shipped with xarray-precomputed.

:mod:`xarray_precomputed.testing.strategies` holds `Hypothesis
<https://hypothesis.readthedocs.io>`_ strategies for chunk grids, sharding specs,
``info`` documents and outer selections; it needs ``hypothesis`` installed, so it
is not imported here.

>>> from xarray_precomputed.testing import strategies  # doctest: +SKIP
>>> strategies.sharding_specs().example()  # doctest: +SKIP
ShardingSpec(preshift_bits=2, hash='identity', minishard_bits=1, shard_bits=3, ...)
"""
