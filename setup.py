"""Builds the one compiled helper, xarray_precomputed._layout (everything else is in pyproject.toml)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "xarray_precomputed._layout",
            ["xarray_precomputed/_layout.c"],
            extra_compile_args=["-O3"],
            # without a compiler the package still installs and copies with NumPy
            # (tests/test_layout.py fails then, so CI always has the compiled copy)
            optional=True,
        )
    ]
)
