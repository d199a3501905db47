"""Atomic artifact writes: a file appears complete under its name or not at all."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import torch


def write_temp(directory: Path, name: str, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write through `write` into a hidden, fsynced temp file in `directory`; it is removed if writing fails. A full
    disk (or quota) fails as that, naming the file, whatever error the writer made of it (see `disk_full`)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as error:
        os.remove(tmp)
        full = disk_full(error)
        if full is not None:
            free = shutil.disk_usage(directory).free
            raise OSError(full.errno, f"{errno.errorcode[full.errno]} ({os.strerror(full.errno)}) while writing "
                                      f"{directory / name} ({free:,} bytes free there): free space on that file "
                                      f"system (or raise the quota), then run the same command again") from error
        raise
    return Path(tmp)


def disk_full(error: BaseException) -> OSError | None:
    """The ENOSPC or EDQUOT error behind `error`, if any: torch.save reports a full disk as `RuntimeError: [enforce
    fail at inline_container.cc] . unexpected pos …`, the OSError only in the chain it was raised from."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error
        error = error.__cause__ or error.__context__
    return None


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    path = Path(path)
    tmp = write_temp(path.parent, path.name, write)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` for writers that want a path; renamed onto `path` on success."""
    path = Path(path)
    tmp = write_temp(path.parent, path.name, lambda f: None)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def beside(output: str | Path, suffix: str) -> Path:
    """The hidden file `.<name>.<suffix>` next to `output`, where a job keeps state about it (checkpoint, marks)."""
    output = Path(output)
    return output.with_name(f".{output.name}.{suffix}")


def regenerate(path: str | Path, rule: str) -> str:
    """The advice an error about a bad workflow artifact ends with: the command that redoes exactly the job of `rule`
    writing `path` (the file first: Snakemake's list options such as --configfile would take it as theirs)."""
    return (f"rerun its {rule} job: `snakemake --force {path} --cores 1` (your run's --configfile or --profile after "
            f"it), then your command again")


def save_torch(obj: Any, path: str | Path) -> None:
    """torch.save into an open file (a path would put the random temp name into the archive's bytes)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def save_json(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def load_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tensor(*tensors: torch.Tensor | None) -> str:
    """Hex sha256 of the tensors' bytes in order (None skipped); memory-mapped tensors are read once."""
    digest = hashlib.sha256()
    for tensor in tensors:
        if tensor is not None:
            digest.update(memoryview(tensor.detach().contiguous().cpu().numpy()).cast("B"))
    return digest.hexdigest()
