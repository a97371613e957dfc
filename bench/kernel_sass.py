"""What the FP8 path's row kernels cost in instructions: sm_90 machine code, counted, no GPU needed.

    python bench/kernel_sass.py        # needs triton importable (its ptxas and cuobjdump)

Compiles the row-quantisation pass and add+norm for an H100/H200 target with the launches'
warps and Triton's own specialisation of 16-divisible arguments (so the loads vectorise as they
do at run time), disassembles them (``cuobjdump -sass``) and prints per launch: instructions per
thread, how many of them are MUFU (exp, reciprocal) and loads/stores, and the time one pass over
131,072 rows would take if instruction issue were its only limit (132 SMs x 4 warp-instructions
per clock x 1.98 GHz). Set beside the pass's bytes over ~4 TB/s, that says whether a pass is
bound by memory or by its arithmetic.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.same_ptx import ADD_NORM, QUANTIZE  # noqa: E402

ROWS = 131_072
ISSUE_PER_S = 132 * 4 * 1.98e9
"""Warp-instructions an H200 issues per second (132 SMs, 4 schedulers, 1.98 GHz boost clock)."""


def sass_counts(fn: Any, signature: dict[str, str], constexprs: dict[str, Any], warps: int) -> collections.Counter:
    """Opcode counts of ``fn`` compiled for sm_90 (pointer and int arguments 16-divisible)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    params = list(fn.arg_names)
    signature = {k: signature.get(k, "constexpr") for k in params}
    constexprs = {k: v for k, v in constexprs.items() if k in params}
    divisible = {(i,): [["tt.divisibility", 16]] for i, k in enumerate(params)
                 if signature[k].startswith("*") or signature[k] == "i32"}
    compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=divisible),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        sass = subprocess.run([str(tool), "-sass", cubin.name], capture_output=True, text=True, check=True).stdout
    ops: collections.Counter = collections.Counter()
    for line in sass.splitlines():
        m = re.match(r"\s+/\*[0-9a-f]{4}\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_]+)", line)
        if m:
            ops[m.group(2)] += 1
    return ops


def main() -> int:
    from virnucpro.models.kernels import add_norm, fp8_quantize

    head, tail = fp8_quantize.row_parts(10240)
    small = fp8_quantize.row_parts(2560)
    cases = [
        ("quantise, GELU, 10,240 wide", fp8_quantize, QUANTIZE, {}, {"HEAD": head, "TAIL": tail, "GELU": True}, 8, 10240),
        ("quantise, 2,560 wide", fp8_quantize, QUANTIZE, {}, {"HEAD": small[0], "TAIL": small[1], "GELU": False}, 4, 2560),
        ("add+norm, bf16 residual, e4m3 out", add_norm, ADD_NORM, {}, {"BLOCK": 4096, "STORE_SUM": True, "QUANT": True}, 4, 2560),
        ("add+norm, fp32 residual, fp16 out", add_norm, ADD_NORM, {"x_ptr": "*fp32", "y_ptr": "*fp16", "h_ptr": "*fp16"},
         {"BLOCK": 4096, "STORE_SUM": True, "QUANT": False}, 8, 2560),
    ]
    sys.stdout.write("| launch | warps | instructions / thread | values / thread | MUFU | LDG+STG | issue-bound ms at "
                     f"{ROWS:,} rows |\n|---|---:|---:|---:|---:|---:|---:|\n")
    for label, module, signature, types, constexprs, warps, width in cases:
        ops = sass_counts(module._KERNEL.kernel(), {**signature, **types}, constexprs, warps)
        total = sum(ops.values())
        ms = total * warps * ROWS / ISSUE_PER_S * 1e3
        sys.stdout.write(f"| {label} | {warps} | {total} | {width / (32 * warps):.0f} | {ops['MUFU']} | "
                         f"{ops['LDG'] + ops['STG']} | {ms:.2f} |\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
