"""distillery: trajectory-matching dataset distillation (MTT, FTD, AST, ATT, APM), reproducibly."""

__version__ = "0.1.0"
