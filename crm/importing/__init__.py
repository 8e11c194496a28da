"""Importing the customer base from the files real CRMs and Excel produce.

    readers.py    streaming CSV (delimiter detection) and XLSX (formulas without a stored value)
    csvfile.py    CSV bytes to rows: the encoding by evidence, rows bounded in size, bad rows skipped whole
    columns.py    the header convention, aliases and --map
    normalize.py  phones (E.164), emails, dates, decimals, booleans, time zones
    writers.py    one writer per kind: parse a row, write a batch
    pipeline.py   import_file: batches, the rejects file, a second process for big files, import_runs
"""

from crm.importing.pipeline import KINDS, ImportFailed, ImportSummary, default_rejects_path, import_file
from crm.importing.writers import SUPERSEDED, ImportOptions

__all__ = ["KINDS", "SUPERSEDED", "ImportFailed", "ImportOptions", "ImportSummary", "default_rejects_path",
           "import_file"]
