"""The exact models: ESM-2, DNABERT-S (and its tokenizer), the MLP classifier, and how their
checkpoints become module weights (:mod:`.weights`).

These modules compute the original tool's functions; the CPU path runs them, and the fast path
(:mod:`virnucpro.models.fast`) is tested against them. Importing this package imports nothing.
"""

__all__: list[str] = []
