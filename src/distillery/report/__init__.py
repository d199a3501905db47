"""Tables (Markdown, CSV) and figures (PNG) from evaluation results and distillation logs."""
from distillery.report.figures import plot_curves, plot_images
from distillery.report.tables import COLUMNS, aggregate, write_table

__all__ = ["COLUMNS", "aggregate", "write_table", "plot_curves", "plot_images"]
