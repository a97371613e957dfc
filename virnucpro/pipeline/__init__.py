"""Framework-free execution: stages, the worker pool, the work queue, memory probes.

Nothing here imports prefect; torch is imported only inside worker processes and the classifier
stage, never at package import time.
"""
