"""Parity with the authors' code, measured: their code (loaded at run time from a checkout the user gives, never
copied here) and ours run on the same inputs, and their numbers are compared (`python -m distillery.parity --help`,
docs/parity.md). Rooms: patches (named run-time patches), reference (the checkout and its modules), lineage (the
MTT lineage's patches), compare, workspace (the shared data and experts), context, one module of cases per method
(mtt, mtt_end_to_end), run (the registry and the report), table (the docs' summary)."""
