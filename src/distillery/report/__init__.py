"""Tables (CSV, Markdown, LaTeX; ours beside the paper's numbers: report.tables), figures (PNG + PDF:
report.figures) and stability studies (report.stability) from evaluation results and distillation logs.

The package imports none of them: a table job, and every Snakemake start (the planner reads report.tables through
distillery.nas), then loads pandas only, not matplotlib, seaborn and SciPy."""
