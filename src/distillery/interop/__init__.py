"""Interoperability with the authors' code: import and export their expert buffers (`replay_buffer_<n>.pt`), and
import their released distilled sets for evaluation under our protocol (`python -m distillery.interop --help`)."""
from distillery.interop.buffers import (export_buffers, import_buffers, parameter_shapes, reference_dir,
                                        reference_mismatch)
from distillery.interop.synsets import import_synset

__all__ = ["export_buffers", "import_buffers", "import_synset", "parameter_shapes", "reference_dir",
           "reference_mismatch"]
