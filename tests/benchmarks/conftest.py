# The files here are benchmark scripts (run by hand: `python tests/benchmarks/bench_X.py`), not tests:
# `python -m pytest` must never collect or import them. (__init__.py makes pytest import this file as
# `benchmarks.conftest`, so it does not shadow tests/conftest.py, which test modules import as `conftest`.)
collect_ignore_glob = ["*.py"]
