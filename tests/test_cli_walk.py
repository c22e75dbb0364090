"""The whole command line, walked from its own parser: what ``--help`` promises is accepted.

The commands are not a list written here: they are read from the click group the console
script runs (``auditd.cli:main``), subcommands included, so a command added tomorrow is
walked too. For each, every option its ``--help`` lists is given back to the parser; the
store option is spelled the same everywhere; and a store named through ``--config`` is the
same store as one named with ``--store``/``--db``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from auditd.cli import main

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample-recording.jsonl"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auditd.cli", *args], capture_output=True,
                          text=True, timeout=300)


def commands(group: click.Group = main, path: tuple[str, ...] = ()
             ) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command and subcommand of the parser, with the words that reach it."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


ALL = sorted(commands(), key=lambda item: item[0])
IDS = [" ".join(path) for path, _ in ALL]

_OPTION_LINE = re.compile(r"^  (-{1,2}[A-Za-z].*?)(?:\s{2,}|$)")


def listed_options(help_text: str) -> list[tuple[list[str], bool]]:
    """(spellings, takes a value) of each option line in a ``--help`` page."""
    out = []
    section = ""
    for line in help_text.splitlines():
        if line and not line.startswith(" "):
            section = line
            continue
        match = _OPTION_LINE.match(line)
        if section.startswith("Options") and match:
            declaration = match.group(1)
            names = re.findall(r"(?:^|,\s*)(--?[A-Za-z][\w-]*)", declaration)
            rest = declaration.split(names[-1], 1)[1].strip()
            out.append((names, bool(rest)))
    return out


def help_of(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_walk_reaches_every_command_and_subcommand() -> None:
    """The walk itself: the parser's own commands, the subcommands of a group among them."""
    names = set(IDS)
    assert {"run", "report", "status", "silence", "silence list", "silence expire"} <= names
    for path, _ in ALL:
        assert f"Usage: main {' '.join(path)}" in help_of(path) or \
            f"Usage: sensor-auditd {' '.join(path)}" in help_of(path)


@pytest.mark.parametrize(("path", "command"), ALL, ids=IDS)
def test_every_option_the_help_lists_is_accepted(path: tuple[str, ...],
                                                 command: click.Command) -> None:
    """Each option line of ``--help``, each of its spellings, given back to the parser.

    ``--help`` is eager: click parses the whole line first (an option it does not know is
    refused then, "No such option"), then prints the help before converting any value, so
    a placeholder value is enough to prove the spelling is accepted."""
    options = listed_options(help_of(path))
    assert any("--help" in names for names, _ in options)
    for names, takes_value in options:
        for name in names:
            if name in ("--help", "-h", "--version"):
                continue
            args = [*path, name, *(["x"] if takes_value else []), "--help"]
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 0, f"{' '.join(args)}: {result.output}"
            assert "Usage:" in result.output
    declared = {opt for p in command.params if isinstance(p, click.Option)
                for opt in p.opts + p.secondary_opts}
    listed = {name for names, _ in options for name in names}
    assert declared - {"--help", "-h"} <= listed, "options the help does not show"


def test_the_store_option_is_spelled_the_same_by_every_command() -> None:
    """Whoever takes a store takes ``--store`` and ``--db`` alike, and offers ``--config``
    beside it wherever the store may be the daemon's."""
    takers = []
    for path, command in ALL:
        spellings = [set(p.opts) for p in command.params if isinstance(p, click.Option)]
        store = [s for s in spellings if s & {"--store", "--db"}]
        if not store:
            continue
        takers.append(" ".join(path))
        assert store == [{"--store", "--db"}], f"{' '.join(path)}: {store}"
        assert any("--config" in s for s in spellings), f"{' '.join(path)} has no --config"
    assert len(takers) >= 8


@pytest.fixture(scope="module")
def daemon_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A store written by a replay of the sample, and a configuration naming it."""
    tmp = tmp_path_factory.mktemp("walk")
    db = tmp / "audit.db"
    result = cli("replay", str(SAMPLE), "--profiles", str(REPO / "device_profiles"),
                 "--references", str(REPO / "references"), "--out", str(tmp / "f.jsonl"),
                 "--store", str(db))
    assert result.returncode == 0, result.stderr
    config = tmp / "config.toml"
    config.write_text(f'profiles_dir = "{REPO / "device_profiles"}"\n'
                      f'references_dir = "{REPO / "references"}"\n'
                      f'[store]\npath = "{db}"\n')
    assert cli("check-config", "--config", str(config)).returncode == 0
    return db, config


def _read_only_store_commands() -> list[tuple[str, ...]]:
    """Commands that take a store and need nothing else to run, and only look."""
    out = []
    for path, command in ALL:
        opts = {o for p in command.params if isinstance(p, click.Option) for o in p.opts}
        required = [p for p in command.params if p.required]
        if "--store" in opts and "--config" in opts and not required \
                and not isinstance(command, click.Group) and path[0] not in ("import",):
            out.append(path)
    return out


def test_a_store_named_by_config_is_the_store_named_by_store_or_db(
        daemon_files: tuple[Path, Path]) -> None:
    db, config = daemon_files
    walked = _read_only_store_commands()
    assert ("status",) in walked and ("devices",) in walked
    for path in walked:
        if path[0] in ("report", "replay", "colocate"):
            continue  # they need outputs or inputs of their own; tested below
        runs = {how: cli(*path, *args) for how, args in (
            ("--config", ("--config", str(config))),
            ("--store", ("--store", str(db), "--config", str(config))),
            ("--db", ("--db", str(db), "--config", str(config))))}
        for how, result in runs.items():
            assert result.returncode == 0, f"{' '.join(path)} {how}: {result.stderr}"
            assert "error" not in result.stderr.lower()
        assert runs["--store"].stdout == runs["--db"].stdout


def test_report_takes_its_store_from_config(daemon_files: tuple[Path, Path],
                                            tmp_path: Path) -> None:
    """``report --config`` is what its help says: the daemon's store, its profiles."""
    db, config = daemon_files
    by_config = cli("report", "--config", str(config), "--json", str(tmp_path / "a.json"))
    assert by_config.returncode == 0, by_config.stderr
    by_store = cli("report", "--store", str(db), "--profiles", str(REPO / "device_profiles"),
                   "--references", str(REPO / "references"), "--json", str(tmp_path / "b.json"))
    assert by_store.returncode == 0, by_store.stderr
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["sites"] == b["sites"] and a["sites"]
    assert a["failing"] == b["failing"]


def test_a_command_without_a_store_says_which_it_looked_for(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'profiles_dir = "{REPO / "device_profiles"}"\n'
                      f'references_dir = "{REPO / "references"}"\n'
                      f'[store]\npath = "{tmp_path / "missing.db"}"\n')
    for args in (("report", "--config", str(config), "--json", str(tmp_path / "r.json")),
                 ("status", "--config", str(config)),
                 ("findings", "--store", str(tmp_path / "missing.db"))):
        result = cli(*args)
        assert result.returncode == 2, result.stderr
        assert "missing.db" in result.stderr and "Traceback" not in result.stderr
    result = cli("import", str(tmp_path / "x.csv"))
    assert result.returncode == 2 and "--store" in result.stderr


def test_the_readme_command_table_is_one_table_naming_every_command() -> None:
    """One markdown table (a blank line would end it and start a second one), with a row
    for every command the parser has."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    lines = section.strip("\n").splitlines()
    rows = [i for i, line in enumerate(lines) if line.startswith("|")]
    assert rows and rows == list(range(rows[0], rows[-1] + 1)), "the table is split"
    first_cells = " ".join(lines[i].split("|")[1] for i in rows)
    for path, _ in ALL:
        if len(path) == 1:
            assert f"sensor-auditd {path[0]}" in first_cells, f"{path[0]} not in the table"
