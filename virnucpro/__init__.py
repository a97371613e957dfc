"""VirNucPro: viral sequence identification with DNABERT-S and ESM-2 features.

Importing the package has no side effects: no CUDA, no Prefect, no environment changes.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
