"""Puts this checkout's `src/` first on sys.path, so jobs run in a conda environment (--sdm conda, envs/),
where the package itself is not installed, import the library of the checkout that runs them."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
