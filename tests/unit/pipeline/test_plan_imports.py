"""The parent process plans a run and starts its workers before it imports torch.

A worker imports torch itself (~2 s on a GPU host); the parent imports it only to check that the
models fit together, which the run does after the workers' start, so both imports overlap.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_CHILD = """
import json, sys
from pathlib import Path
import virnucpro.cli
from virnucpro.pipeline.parameters import build_config
from virnucpro.pipeline.plan import check_run_models, plan_run
from virnucpro.pipeline.prediction import run_prediction
from virnucpro.progress_display import ProgressDisplay
models = json.loads(sys.argv[1])
config = build_config({"input_fasta": Path("in.fa"), "output_dir": Path("out"), "device": "cpu",
                       **{k: Path(v) for k, v in models.items()}}, origin="option")
plan = plan_run(config, True)
planned_without_torch = "torch" not in sys.modules
dims = check_run_models(plan)
print(json.dumps({"planned_without_torch": planned_without_torch, "torch_after_check": "torch" in sys.modules,
                  "dims": [dims.dnabert, dims.esm, dims.classifier]}))
"""


def test_planning_imports_no_torch_and_the_model_check_does(demo_models) -> None:  # type: ignore[no-untyped-def]
    models = {"dnabert_model": str(demo_models.dnabert), "esm_model": str(demo_models.esm),
              "classifier": str(demo_models.classifiers[500])}
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(models)], capture_output=True, text=True,
                          cwd=root, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["planned_without_torch"], "planning imported torch: the workers' start would wait for it"
    assert result["torch_after_check"]  # the check reads the model files (and is what needs torch)
    assert result["dims"][2] == result["dims"][0] + result["dims"][1]
