"""GPU kernels of the fast path, each beside its PyTorch reference (the CPU path and what the
GPU tests hold the kernel to).

Triton is optional: a kernel is built on its first use (:mod:`.triton_support`); without
Triton, without CUDA, or after a failed launch, callers get the reference. Importing this
package, or any of its modules, never imports Triton.
"""

__all__: list[str] = []
