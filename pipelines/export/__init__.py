"""The store's append-only tables as Parquet datasets, kept up to date incrementally
(``python -m pipelines.export_store``; the layout is the README's data card)."""

from pipelines.export.run import ExportOptions, export
from pipelines.export.state import ExportError, store_identity

__all__ = ["ExportError", "ExportOptions", "export", "store_identity"]
