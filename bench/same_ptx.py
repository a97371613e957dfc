"""Whether the FP8 path's Triton kernels compile to the same sm_90 code as at an earlier commit.

    python bench/same_ptx.py --base REV      # needs triton importable; no GPU needed

Compiles the add+norm kernel and the row-quantisation kernel of this checkout and of ``REV`` (read
with ``git show``) for an H100/H200 target (``GPUTarget("cuda", 90, 32)``) and compares their PTX
instruction streams, debug lines, labels and file names left out. Identical code means GPU
measurements and GPU tests made at ``REV`` hold for this checkout's kernels. For a refactor done
where no GPU is at hand.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KERNELS = {"add_norm": "virnucpro/models/kernels/add_norm.py",
           "fp8_quantize": "virnucpro/models/kernels/fp8_quantize.py"}
ADD_NORM = {"x_ptr": "*bf16", "y_ptr": "*bf16", "w_ptr": "*fp32", "b_ptr": "*fp32", "h_ptr": "*fp8e4nv",
            "s_ptr": "*fp32", "n_cols": "i32", "eps": "fp32", "fp8_max": "fp32", "min_scale": "fp32",
            "BLOCK": "constexpr", "STORE_SUM": "constexpr", "QUANT": "constexpr"}
QUANTIZE = {"x_ptr": "*bf16", "q_ptr": "*fp8e4nv", "s_ptr": "*fp32", "n_cols": "i32", "fp8_max": "fp32",
            "min_scale": "fp32", "BLOCK": "constexpr", "HEAD": "constexpr", "TAIL": "constexpr",
            "GELU": "constexpr"}


def load_at(rev: str, name: str, folder: Path) -> ModuleType:
    path = folder / f"{name}_{rev[:12]}.py"
    shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{KERNELS[name]}"], capture_output=True, text=True)
    if shown.returncode != 0:
        raise SystemExit(f"{rev}: has no {KERNELS[name]} ({shown.stderr.strip()}); compare with a later commit")
    path.write_text(shown.stdout)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def instructions(fn: Any, signature: dict[str, str], constexprs: dict[str, Any], warps: int) -> list[str]:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    params = fn.arg_names if hasattr(fn, "arg_names") else list(signature)
    signature = {k: v for k, v in signature.items() if k in params}
    for extra in params:  # a constexpr the other revision lacks
        signature.setdefault(extra, "constexpr")
    constexprs = {k: v for k, v in constexprs.items() if k in params}
    ptx = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                         target=GPUTarget("cuda", 90, 32), options={"num_warps": warps}).asm["ptx"]
    body = ptx[ptx.index(".entry"):].split(".section\t.debug")[0]
    out = []
    for line in body.splitlines():
        s = line.strip()
        if not s or s.startswith((".loc", ".file", "//")) or re.match(r"\$L__tmp\d+:", s):
            continue
        out.append(re.sub(r"\b(add_norm|quantize_rows_kernel)\w*", "K", s))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="the commit to compare with")
    args = p.parse_args(argv)
    from virnucpro.models.kernels import add_norm, fp8_quantize

    # the launches of ESM-2 3B's packed path: (kernel, module, signature, its types, constexprs, warps)
    cases = [("add_norm", add_norm, ADD_NORM, {"x_ptr": x, "h_ptr": h},
              {"BLOCK": 4096, "STORE_SUM": True, "QUANT": q}, 4 if q else 8)
             for x, h, q in (("*bf16", "*fp8e4nv", True), ("*fp32", "*fp8e4nv", True), ("*fp32", "*fp16", False))]
    cases += [("fp8_quantize", fp8_quantize, QUANTIZE, {}, {"BLOCK": b, "HEAD": h, "TAIL": t, "GELU": g,
                                                           "EXACT_DIVISION": False}, w)
              for g, b, h, t, w in ((True, 16384, 8192, 2048, 8), (False, 4096, 2048, 512, 4))]
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        old = {name: load_at(args.base, name, Path(tmp)) for name in KERNELS}
        for name, module, signature, types, constexprs, warps in cases:
            sig = {**signature, **types}
            new_code = instructions(module._KERNEL.kernel(), sig, constexprs, warps)
            old_code = instructions(old[name]._KERNEL.kernel(), sig, constexprs, warps)
            equal = new_code == old_code
            same &= equal
            shown = {k: v for k, v in {**types, **constexprs}.items()
                     if k in module._KERNEL.kernel().arg_names}
            sys.stdout.write(f"{name} {shown}, {warps} warps: {'identical' if equal else 'DIFFERENT'} "
                             f"({len(new_code)} / {len(old_code)} PTX lines)\n")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
