"""The documentation holds: the README stays a front page, every relative link and anchor resolves, every
`python -m distillery…` command in a code block parses, every `snakemake` command's config and targets exist, the
configuration page lists every key with the code's defaults, and the performance figures are the committed
benchmark files'."""
import argparse
import importlib
import re
import shlex
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from unittest import mock

import pytest
import yaml

from distillery import plan
from distillery.distill.config import DistillConfig
from distillery.evaluate import EvalConfig

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "config" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
sys.path.insert(0, str(ROOT / "benchmarks"))
import summary  # noqa: E402  (benchmarks/summary.py)

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def commands(page: Path) -> list[list[str]]:
    """The shell commands in the page's code blocks: continuation lines joined, comments dropped."""
    found = []
    for block in FENCE.findall(page.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                try:
                    found.append(shlex.split(line))
                except ValueError:
                    continue
    return found


def python_module_commands() -> list[tuple[str, list[str]]]:
    out = []
    for page in PAGES:
        for words in commands(page):
            if words[:2] == ["python", "-m"] and words[2].startswith("distillery"):
                out.append((f"{page.relative_to(ROOT)}: {' '.join(words)}", words[2:]))
    return out


def snakemake_commands() -> list[tuple[str, list[str]]]:
    out = []
    for page in PAGES:
        for words in commands(page):
            if words and words[0] == "snakemake":
                out.append((f"{page.relative_to(ROOT)}: {' '.join(words)}", words[1:]))
    return out


def test_the_readme_is_a_front_page_of_at_most_150_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: link to {target}: no {linked}"
        if anchor:
            assert anchor in anchors(linked), f"{page.name}: link to {target}: no heading #{anchor} in {linked.name}"


class Parsed(Exception):
    """Raised instead of running a command once its arguments parsed."""


@pytest.mark.parametrize("where,argv", python_module_commands(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_documented_python_command_parses(where, argv):
    module = importlib.import_module(f"{argv[0]}.__main__" if importlib.util.find_spec(f"{argv[0]}.__main__")
                                     else argv[0])
    parse = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        raise Parsed(parse(self, args, namespace))

    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_and_stop), pytest.raises(Parsed):
        module.main(argv[1:])


@pytest.mark.parametrize("where,argv", snakemake_commands(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_documented_snakemake_command_names_a_valid_config_and_its_tables(where, argv):
    configs = [argv[i + 1] for i, word in enumerate(argv) if word == "--configfile"]
    config = plan.load_config(ROOT, *[ROOT / c for c in configs])
    plan.check_schema(config, ROOT / plan.SCHEMA)
    tables = {table["name"] for table in config["tables"]}
    for target in (w for w in argv if w.startswith("results/tables/")):
        assert target.removeprefix("results/tables/").rsplit(".", 1)[0] in tables, f"{where}: no table for {target}"


def documented(section: str) -> dict[str, str]:
    """`key` → default cell of config/README.md's table whose header starts with `section`."""
    text = (ROOT / "config" / "README.md").read_text()
    table = text[text.index(f"| {section} |"):].split("\n\n", 1)[0]
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\| `([\w.<>]+)` \| ([^|]*) \|", table, re.M)}


def as_yaml(value) -> str:
    """A default as the page writes it: true/false, null, else the value."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def test_every_method_and_evaluation_setting_is_documented_with_the_codes_default():
    for section, config, skip in (("method setting", DistillConfig, {"method", "kind", "ipc", "seed"}),
                                  ("evaluation setting", EvalConfig, set())):
        rows = documented(section)
        for field in (f for f in fields(config) if f.name not in skip):
            assert field.name in rows, f"config/README.md: no row for {section} `{field.name}`"
            if field.default is not MISSING:
                assert f"`{as_yaml(field.default)}`" in rows[field.name], (field.name, rows[field.name])
    assert "seeds" in documented("evaluation setting")


def test_every_top_level_key_of_the_schema_is_documented():
    schema = yaml.safe_load((ROOT / plan.SCHEMA).read_text())
    text = (ROOT / "config" / "README.md").read_text()
    for key in schema["properties"]:
        assert f"`{key}" in text, f"config/README.md does not document `{key}`"
    for section in ("runtime", "reliability", "experts"):
        for key in schema["properties"][section]["properties"]:
            assert f"`{section}.{key}" in text, f"config/README.md does not document `{section}.{key}`"


def test_the_performance_figures_are_the_committed_benchmark_files():
    page = summary.PAGE.read_text()
    assert summary.page_with_summary(page) == page, "run `python benchmarks/summary.py --write`"
