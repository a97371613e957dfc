"""The torch layer: DNABERT-S and ESM-2 encoders, the MLP classifier, and where their files live.

Three concerns, each usable without the others (as in fair-esm):

- tokenise: :mod:`~virnucpro.models.dnabert_tokenizer`,
  :class:`~virnucpro.models.esm2.ProteinAlphabet`;
- load: :func:`~virnucpro.models.dnabert.load_dnabert`, :func:`~virnucpro.models.esm2.load_esm2`,
  :func:`~virnucpro.models.classifier.load_classifier` (no remote code, no unrestricted pickles);
- compute: :mod:`~virnucpro.models.embedders` (what the worker processes call).

:mod:`~virnucpro.models.discovery` finds the model files (option, environment, the caches the
original tool used); :mod:`~virnucpro.models.demo` builds tiny random models with the real formats.

Importing this package imports nothing heavy; import the submodules you need.
"""

__all__: list[str] = []
