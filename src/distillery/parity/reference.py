"""The authors' checkout: which repository and commit a method's parity runs against, the check that a folder is
that checkout (before any compute), and its modules imported at run time from there. Nothing of theirs is copied
into this repository: their files are read from the folder the user gives, each run."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import runpy
import subprocess
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from distillery.parity.patches import Patches


@dataclass(frozen=True)
class Reference:
    """A method's authors' repository: its GitHub name, the commit the fidelity ledger follows, the files a checkout
    must have, and the folders (relative to its root) their scripts put on sys.path."""

    method: str
    repo: str
    commit: str
    files: tuple[str, ...]
    search: tuple[str, ...] = (".",)

    def clone_command(self, into: str = "DIR") -> str:
        return f"git clone https://github.com/{self.repo} {into} && git -C {into} checkout {self.commit}"


def checkout_commit(root: Path) -> str | None:
    """The full commit hash the checkout at `root` is on (None when it is not a git checkout)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def check_checkout(ref: Reference, root: str | Path, any_commit: bool = False) -> str:
    """The commit of the checkout at `root` after checking it is `ref`'s: the folder exists, holds `ref.files`, and
    is on `ref.commit` (any commit with `any_commit`). The error names the fix."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"--reference {root} is not a folder; get {ref.method}'s code with: {ref.clone_command()}")
    missing = [f for f in ref.files if not (root / f).is_file()]
    if missing:
        raise ValueError(f"--reference {root} is not a checkout of {ref.repo}: {', '.join(missing)} missing; get it "
                         f"with: {ref.clone_command()}")
    commit = checkout_commit(root)
    if commit is None:
        if not any_commit:
            raise ValueError(f"--reference {root} is not a git checkout, so its commit is unknown; use "
                             f"{ref.clone_command()} (or pass --any-commit to run it anyway)")
        return "unknown"
    if not commit.startswith(ref.commit) and not any_commit:
        raise ValueError(f"--reference {root} is at {commit[:7]}, not {ref.commit} (the commit the fidelity ledger "
                         f"follows): run git -C {root} checkout {ref.commit}, or pass --any-commit")
    return commit


def _top_level_names(folders: Sequence[Path]) -> set[str]:
    """The module and package names the authors' folders provide (e.g. utils, networks; FTD's utils/ is a package
    without __init__.py), which may shadow others."""
    names = set()
    for folder in folders:
        for path in folder.iterdir():
            if path.suffix == ".py":
                names.add(path.stem)
            elif path.is_dir() and any(path.glob("*.py")):
                names.add(path.name)
    return names


@contextlib.contextmanager
def authors_modules(ref: Reference, root: str | Path, names: Sequence[str],
                    stubs: dict[str, types.ModuleType] | None = None) -> Iterator[types.SimpleNamespace]:
    """`names` (e.g. "utils", "distill") imported from the checkout at `root`, with `ref.search` first on sys.path
    and `stubs` (e.g. a wandb stand-in) in sys.modules. Modules of the same names imported before (another
    checkout's utils) are set aside and put back after, and the authors' modules are dropped again, so two methods'
    checkouts never see each other's files."""
    root = Path(root).resolve()
    folders = [root / s for s in ref.search]
    shadowed = _top_level_names(folders) | set(stubs or {})
    saved = {name: mod for name, mod in sys.modules.items() if name.split(".")[0] in shadowed}
    for name in saved:
        del sys.modules[name]
    saved_path = list(sys.path)
    sys.path[:0] = [str(f) for f in folders]
    sys.modules.update(stubs or {})
    try:
        with quiet():
            modules = {name: importlib.import_module(name) for name in names}
        yield types.SimpleNamespace(**modules)
    finally:
        sys.path[:] = saved_path
        for name in [n for n in sys.modules if n.split(".")[0] in shadowed]:
            del sys.modules[name]
        sys.modules.update(saved)


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace):
        super().__init__("parse_args returned")
        self.namespace = namespace


def script_args(path: Path, argv: Sequence[str], patches: Patches) -> argparse.Namespace:
    """The Namespace the authors' script at `path` builds from `argv` under `__main__` (their parser, their
    defaults): the script runs as __main__ until parse_args returns, which hands the Namespace back here and stops
    it before its main(). Run inside authors_modules (the script imports their modules)."""
    def capture(parser: argparse.ArgumentParser, args: Sequence[str] | None = None,
                namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        raise _Parsed(original(parser, list(argv), namespace))

    original = argparse.ArgumentParser.parse_args
    with Patches() as local:
        local.set(argparse.ArgumentParser, "parse_args", capture, "argparse",
                  "their script's own parser reads the harness's arguments; the parsed Namespace is handed back and "
                  "the script stops before its main()")
        try:
            with quiet():
                runpy.run_path(str(path), run_name="__main__")
        except _Parsed as parsed:
            patches.note(local.applied[0].name, local.applied[0].what)
            return parsed.namespace
    raise RuntimeError(f"{path} finished without calling parse_args, so its arguments could not be read")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Their prints, progress bars and warnings kept off the harness's output; their exit() (e.g. get_network's
    'DC error: unknown model') raised as an error with its message and the last lines they printed."""
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except SystemExit as stop:
        tail = "\n".join(sink.getvalue().splitlines()[-5:])
        raise RuntimeError(f"the authors' code exited with {stop.code!r}; its last output:\n{tail}") from None
