"""Tables (CSV, Markdown, LaTeX; ours beside the paper's numbers) and figures (PNG + PDF) from evaluation results
and distillation logs."""
from distillery.report.figures import (plot_accuracy_vs_ipc, plot_cross_arch, plot_curves, plot_distillation,
                                       plot_images, plot_table)
from distillery.report.stability import plot_stability, stability_counts, write_stability
from distillery.report.tables import (COLUMNS, COMPARED_COLUMNS, REPORTED_COLUMNS, aggregate, compare, latex_escape,
                                      load_reported, to_latex, to_markdown, write_table)

__all__ = ["COLUMNS", "COMPARED_COLUMNS", "REPORTED_COLUMNS", "aggregate", "compare", "latex_escape", "load_reported",
           "to_latex", "to_markdown", "write_table", "plot_accuracy_vs_ipc", "plot_cross_arch", "plot_curves",
           "plot_distillation", "plot_images", "plot_table", "plot_stability", "stability_counts", "write_stability"]
