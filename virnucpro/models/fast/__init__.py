"""The GPU fast path: the reference models' functions restructured for throughput (fused q/k/v,
compiled layers, packed batches without padding).

Importing this package imports nothing; its modules import torch, and the Triton kernels of
:mod:`virnucpro.models.kernels` only when they first run.
"""

__all__: list[str] = []
