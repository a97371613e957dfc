"""The VirNucPro benchmark (``python bench/run_bench.py --help``); not part of the package."""
