# Makes pytest import this folder's conftest.py as `benchmarks.conftest`, so it cannot shadow tests/conftest.py
# (which test modules import as `conftest`). The scripts here are run directly, never imported as a package.
