"""pyserial and python-can upstream suites on xoq (a package so that its conftest does not
replace python/tests/conftest.py as the module ``conftest``, which test files import)."""
