"""Helpers shared by the test files: the checkout's paths, Snakemake runs (in this process, or through the CLI where
the CLI itself is tested), the job counts of a run's output, the digits experts the end-to-end runs share, the order
the files run in, and the tiny distillation problem of the unit tests."""
import contextlib
import fcntl
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from distillery.distill import DistillConfig
from distillery.functional import FlatModel
from distillery.models import ConvNet
from distillery.plan import expert_set_files, expert_sets, load_config

# pytest-xdist runs PYTEST_XDIST_WORKER_COUNT workers side by side: each takes its share of the cores for torch's
# threads. torch's default, every core in every process, oversubscribes them: its threads spin waiting for each
# other, and a worker's tests and the Snakemake jobs of the other (one thread each) take several times as long.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "workflow/Snakefile"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE)]
# The Snakefile imports the library too: this checkout's, not whichever distillery the environment installed.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}


def write_config(workdir: Path, config: dict | None) -> list[str]:
    """`--configfile workdir/config.yaml` holding `config`, or nothing for the default config."""
    if config is None:
        return []
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return ["--configfile", str(workdir / "config.yaml")]


@contextlib.contextmanager
def _jobs_output_into(text: list[str]):
    """File descriptors 1 and 2 into a file while the body runs, its text appended to `text`: a job's process
    writes there (its errors), not to this process's sys.stdout and sys.stderr."""
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile("w+") as file:
        try:
            os.dup2(file.fileno(), 1)
            os.dup2(file.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            file.seek(0)
            text.append(file.read())


def snakemake(workdir: Path, config: dict | None, *args: str) -> subprocess.CompletedProcess:
    """Snakemake's command line parsed and run in this process (snakemake.cli, as `snakemake` does): the same
    behaviour as the CLI without a new interpreter importing Snakemake, its plugins and torch for every run.
    stdout is Snakemake's; stderr its errors and its jobs' output."""
    from snakemake.cli import args_to_api, parse_args
    from snakemake.exceptions import print_exception

    argv = ["-s", str(SNAKEFILE), "--directory", str(workdir), *write_config(workdir, config), *args]
    out, err, jobs = io.StringIO(), io.StringIO(), []
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _jobs_output_into(jobs), \
            contextlib.chdir(ROOT):
        try:
            parser, parsed = parse_args(argv)
            ok = args_to_api(parsed, parser)
        except Exception as error:  # what snakemake.cli.main prints before it exits with status 1
            print_exception(error)
            ok = False
    return subprocess.CompletedProcess(argv, 0 if ok else 1, out.getvalue(), err.getvalue() + jobs[0])


def snakemake_cli(workdir: Path, config: dict | None, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Snakemake as its own process, for what only the CLI shows (its exit on a bad config file, signals)."""
    command = SNAKEMAKE + ["--directory", str(workdir), *write_config(workdir, config), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=ENV)


# The expert settings of the end-to-end workflow tests (tests/test_workflow*.py): one setting, so that each expert set
# is trained once per session and shared (fixture `shared_experts`).
EXPERTS = {"count": 2, "overrides": {"epochs": 6, "batch": 128}}


def expert_targets(workdir: Path, config: dict) -> list[str]:
    """Every file of every expert set `config` reads (plan.expert_sets), as the workflow's config with `config` on
    top gives them: conftest.snakemake's run of `config` writes it to workdir/config.yaml."""
    write_config(workdir, config)
    full = load_config(ROOT, workdir / "config.yaml")
    return [file for where in expert_sets(full) for file in expert_set_files(full, **where)]


@pytest.fixture(scope="session")
def expert_cache(tmp_path_factory) -> Path:
    """Where the session's shared digits data and experts are trained: one folder for all pytest-xdist workers of
    this run (their common base), or this session's own without xdist."""
    base = tmp_path_factory.getbasetemp()
    cache = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-experts"
    cache.mkdir(exist_ok=True)
    return cache


@pytest.fixture
def shared_experts(expert_cache):
    """seed(workdir, config): the prepared digits data and every expert set `config` reads, trained in the cache by
    the first test that needs them (under a lock, so two workers never train the same set), copied into `workdir`
    with their times and Snakemake's records of the jobs that made them: Snakemake then finds them up to date, and
    would retrain them if `config` set other expert settings. A config that holds a validation split out trains on
    less data: its data and experts have a cache folder of their own."""
    def seed(workdir: Path, config: dict) -> None:
        assert config["experts"] == EXPERTS, "the shared experts are trained with conftest.EXPERTS"
        # A held-out validation split changes the training split, so its experts are another set, in their own folder.
        held = "-".join(f"{d}{v['per_class']}s{v.get('seed', 0)}" for d, v in sorted(config.get("validation", {}).items()))
        cache = expert_cache / f"validation-{held}" if held else expert_cache
        cache.mkdir(exist_ok=True)
        with open(expert_cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            trained = snakemake(cache, config, "--cores", "2", *expert_targets(cache, config))
            assert trained.returncode == 0, trained.stderr[-3000:]
            for folder in ["results/data", "results/experts", ".snakemake/metadata"]:
                if (cache / folder).exists():
                    shutil.copytree(cache / folder, workdir / folder, dirs_exist_ok=True)
    return seed


# Files whose tests run longest go first, so that pytest-xdist's workers (--dist loadfile) finish together instead of
# one starting a long file when the other has nothing left.
LONGEST_FIRST = ["test_slurm.py", "test_workflow_methods.py", "test_recovery.py", "test_dvc.py", "test_workflow.py",
                 "test_workflow_honest.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))   # stable: each file's order kept


def job_counts(output: str) -> dict[str, int]:
    """Rule -> job count from Snakemake's 'Job stats' table."""
    stats = output.split("Job stats:")[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m[1] != "total"}


def tiny_student(dtype=torch.float32) -> FlatModel:
    torch.manual_seed(0)
    return FlatModel(ConvNet(1, 3, 4, width=4, depth=1).to(dtype))


def make_problem():
    """Three separable classes of 4x4 images and two short 'expert' trajectories trained on them."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat(20)
    images = torch.randn(60, 1, 4, 4, generator=g) * 0.5 + labels.view(-1, 1, 1, 1).float() - 1
    student = tiny_student()
    trajectories = []
    for seed in range(2):
        torch.manual_seed(seed)
        model = ConvNet(1, 3, 4, width=4, depth=1)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        snapshots = [FlatModel(model).flatten()]
        for _ in range(4):
            opt.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            opt.step()
            snapshots.append(FlatModel(model).flatten())
        trajectories.append(torch.stack(snapshots))
    return images, labels, student, trajectories


def config(**changes) -> DistillConfig:
    """The unit tests' distillation settings, with `changes`."""
    base = dict(method="mtt", kind="trajectory", ipc=2, model="ConvNet", iterations=15, syn_steps=5, expert_epochs=2,
                max_start_epoch=2, lr_img=10.0, lr_lr=1e-5, lr_teacher=0.05, dsa="none")
    return DistillConfig(**{**base, **changes})
