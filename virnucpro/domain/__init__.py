"""Pure-Python domain layer: FASTA records, chunking, six-frame translation, calls, tables.

No torch and no prefect may be imported anywhere below this package.
"""
