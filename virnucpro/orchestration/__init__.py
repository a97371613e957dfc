"""The Prefect layer: the only code in the package that imports prefect.

- :mod:`~virnucpro.orchestration.task_runner`: :class:`GpuTaskRunner`, the task runner that owns a
  flow run's persistent GPU worker pool;
- :mod:`~virnucpro.orchestration.tasks`: the prediction stages and memory checkpoints as tasks;
- :mod:`~virnucpro.orchestration.artifacts`: the ``gpu-memory-checkpoints`` table and the
  ``prediction-summary`` / ``nightly-summary`` markdown artifacts;
- :mod:`~virnucpro.orchestration.batch`: a nightly batch: which inbox samples need a run, and
  what happened to each;
- :mod:`~virnucpro.orchestration.night_report`: the night report (HTML, drift against earlier
  nights); framework-free like ``batch``.

The flows themselves live in ``flows/`` (``flows/predict.py``, ``flows/nightly.py``). Importing
this package imports nothing; import the submodule you need.
"""

__all__: list[str] = []
