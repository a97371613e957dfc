"""The torch layer: DNABERT-S and ESM-2 encoders, the MLP classifier, and where their files live.

- :mod:`.reference`: the exact models and their loading (tokenise: ``dnabert_tokenizer``,
  ``esm2.ProteinAlphabet``; load: ``dnabert.load_dnabert``, ``esm2.load_esm2``,
  ``classifier.load_classifier``, no remote code, no unrestricted pickles; ``weights``: how
  checkpoint tensors become module weights). The CPU path and the fp32 reference.
- :mod:`.fast`: the GPU fast path (fused, compiled, packed batches) of the same functions.
- :mod:`.kernels`: its GPU kernels (Triton, optional), each beside its PyTorch reference.
- :mod:`.embedders`: the compute API the worker processes call; it picks the fast path on CUDA.
- :mod:`.discovery` finds the model files (option, environment, the caches the original tool
  used); :mod:`.demo` writes tiny random models in the real file formats.

Importing this package imports nothing heavy; import the submodules you need.
"""

__all__: list[str] = []
