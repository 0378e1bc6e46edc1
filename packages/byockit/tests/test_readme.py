"""Every Python snippet in the repository's README.md runs, as written, and passes.

The convention (README authors, read this):

- Every fenced block opened with exactly ```` ```python ```` is run, in a
  fresh temporary directory, as ``python BLOCK.py``, with a time limit. It
  must exit 0 and need no network: it is a complete program.
- A block whose first line is ``# NAME.py`` (a module name) is also a file:
  it is saved as ``NAME.py`` in the directory of every block from there on,
  so later blocks can import it (``from my_worker import Invert``). It is
  run too (importing it must work), as ``python -m pytest NAME.py`` when
  NAME starts with ``test_``: a test file must pass. Those pytest runs see no
  configuration but an empty ``pytest.ini``, like a fresh project.
- Other fences (```` ```sh ````, ```` ```text ````...) are not run. But
  every ``byockit``, ``byockit-worker``, ``byockit-client`` or
  ``byockit-testkit`` command in a ```` ```sh ```` block of README.md,
  docs/ or packages/byockit/README.md (continuation lines joined, also
  after ``docker run ... IMAGE``) must parse with that command's real
  argument parser: a flag that does not exist fails. Write commands
  without ``[optional]`` brackets.

A failure names the README line the block starts on and shows its output.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Final

import attrs
import pytest

from byockit.client.cli import build_parser as client_parser
from byockit.demo.cli import build_parser as demo_parser
from byockit.testkit import cli as testkit_cli
from byockit.worker.cli import _parser as worker_parser

REPO: Final = Path(__file__).resolve().parents[3]
README: Final = REPO / "README.md"
BLOCK_TIMEOUT: Final = 100.0
"""Seconds a block may run before it counts as hung (blocks are meant to take a few)."""
QUICK_START: Final = (
    "python3 -m pip install nox && nox -s demo",
    "python3 -m pip install nox && nox -s tests",
)
_FILE_NAME: Final = re.compile(r"# ([A-Za-z_][A-Za-z0-9_]*\.py)\s*\Z")


@attrs.frozen
class Block:
    line: int
    """The README line of the first line of code (after the fence)."""
    code: str
    file_name: str | None
    """``NAME.py`` when the first line names the block a file."""


def python_blocks(markdown: str) -> list[Block]:
    """The ```` ```python ```` blocks of ``markdown``, in order."""
    blocks: list[Block] = []
    lines: list[str] | None = None
    start = 0
    for number, line in enumerate(markdown.splitlines(), start=1):
        fence = line.strip()
        if lines is None:
            if fence == "```python":
                lines, start = [], number + 1
        elif fence == "```":
            code = "\n".join(lines) + "\n"
            named = _FILE_NAME.match(lines[0]) if lines else None
            blocks.append(Block(start, code, named[1] if named else None))
            lines = None
        else:
            lines.append(line)
    assert lines is None, f"the ```python block at line {start - 1} is never closed"
    return blocks


def shell_commands(markdown: str) -> list[str]:
    """The commands of the ```` ```sh ```` blocks, in order (comments and blank lines left out)."""
    commands: list[str] = []
    inside = False
    for line in markdown.splitlines():
        fence = line.strip()
        if fence.startswith("```"):
            inside = not inside and fence == "```sh"
        elif inside:
            command = line.split("  #")[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def cli_invocations(markdown: str) -> list[list[str]]:
    """Each byockit command of the ```` ```sh ```` blocks: its program and arguments."""
    found: list[list[str]] = []
    inside = False
    pending = ""
    for line in markdown.splitlines():
        fence = line.strip()
        if fence.startswith("```"):
            inside = not inside and fence == "```sh"
            continue
        if not inside:
            continue
        if fence.endswith("\\"):
            pending += fence[:-1] + " "
            continue
        words = shlex.split(pending + fence, comments=True)
        pending = ""
        if words[:1] == ["docker"] and words[1:2] != ["run"]:
            continue  # docker build: a byockit name there is an image tag
        # In `docker run ... IMAGE PROGRAM ...` the image may share the program's name.
        programs = [
            i
            for i, word in enumerate(words)
            if word in CLI_PARSERS and words[i + 1 : i + 2] != [word]
        ]
        if programs:
            found.append(words[programs[0] :])
    return found


CLI_PARSERS: Final = {
    "byockit": demo_parser,
    "byockit-worker": worker_parser,
    "byockit-client": client_parser,
    "byockit-testkit": testkit_cli._parser,
}
DOCUMENTS: Final = [
    README,
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "packages" / "byockit" / "README.md",
]
BLOCKS: Final = python_blocks(README.read_text(encoding="utf-8"))


def run_block(
    block: Block, earlier: list[Block], directory: Path
) -> subprocess.CompletedProcess[str]:
    """Run ``block`` in ``directory``, with the files named by ``earlier`` blocks in place."""
    (directory / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    for each in [*earlier, block]:
        if each.file_name is not None:
            (directory / each.file_name).write_text(each.code, encoding="utf-8")
    name = block.file_name or f"readme_line_{block.line}.py"
    (directory / name).write_text(block.code, encoding="utf-8")
    if name.startswith("test_"):
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name]
    else:
        command = [sys.executable, name]
    environment = {**os.environ, "PYTHONPATH": ""}  # nothing from this checkout's test run
    try:
        return subprocess.run(
            command,
            cwd=directory,
            env=environment,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        # With text=True the captured output is str, though typed as bytes too.
        output = "".join(
            part.decode(errors="replace") if isinstance(part, bytes) else part
            for part in (exc.stdout or "", exc.stderr or "")
        )
        pytest.fail(f"README.md line {block.line}: still running after {BLOCK_TIMEOUT} s\n{output}")


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"line-{b.line}" for b in BLOCKS])
def test_readme_python_block_runs(index: int, tmp_path: Path) -> None:
    block = BLOCKS[index]
    result = run_block(block, BLOCKS[:index], tmp_path)
    assert result.returncode == 0, (
        f"README.md line {block.line}: exit status {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )


def test_the_readme_shows_the_three_journeys_in_python() -> None:
    assert len(BLOCKS) >= 3, "README.md should show the worker, app and CI journeys in Python"


def test_the_quick_start_comes_first_and_ci_runs_it() -> None:
    readme = README.read_text(encoding="utf-8")
    assert tuple(shell_commands(readme)[:2]) == QUICK_START
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert QUICK_START[1] in ci.splitlines(), ".ci/run no longer runs the README's test command"


def test_every_documented_command_parses_with_the_real_cli() -> None:
    invocations = [
        (document.relative_to(REPO), words)
        for document in DOCUMENTS
        for words in cli_invocations(document.read_text(encoding="utf-8"))
    ]
    assert len(invocations) >= 10, "the docs should show the byockit commands"
    for document, (program, *arguments) in invocations:
        parser: argparse.ArgumentParser = CLI_PARSERS[program]()
        parser.exit_on_error = False
        try:
            parser.parse_args(arguments)
        except (argparse.ArgumentError, SystemExit) as exc:
            pytest.fail(f"{document}: {program} {shlex.join(arguments)}: {exc}")


def test_commands_are_found_after_environment_and_docker_run() -> None:
    markdown = "\n".join(
        [
            "```sh",
            "FOO=1 byockit-worker serve a:b \\",
            "    --port 8000  # a comment",
            "docker build -f Dockerfile -t byockit-worker .",
            "docker run -e X=1 byockit-worker byockit-worker serve a:b --host 0.0.0.0",
            "nox -s demo -- --seconds 60",
            "```",
            "byockit-worker not in a block",
        ]
    )
    assert cli_invocations(markdown) == [
        ["byockit-worker", "serve", "a:b", "--port", "8000"],
        ["byockit-worker", "serve", "a:b", "--host", "0.0.0.0"],
    ]


def test_a_flag_that_does_not_exist_is_caught() -> None:
    parser = worker_parser()
    parser.exit_on_error = False
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        parser.parse_args(["serve", "a:b", "--no-such-flag"])


def test_blocks_are_found_with_their_lines_and_file_names() -> None:
    markdown = "\n".join(
        [
            "# Title",  # 1
            "```python",  # 2
            "# my_worker.py",  # 3
            "X = 1",  # 4
            "```",  # 5
            "```sh",  # 6
            "echo not python",  # 7
            "```",  # 8
            "```python",  # 9
            "# no file name here",  # 10
            "from my_worker import X",  # 11
            "```",  # 12
        ]
    )
    blocks = python_blocks(markdown)
    assert [(b.line, b.file_name) for b in blocks] == [(3, "my_worker.py"), (10, None)]
    assert blocks[1].code == "# no file name here\nfrom my_worker import X\n"
    assert shell_commands(markdown) == ["echo not python"]
    with pytest.raises(AssertionError, match="line 1 is never closed"):
        python_blocks("```python\nX = 1\n")


def test_a_failing_block_is_reported(tmp_path: Path) -> None:
    module = Block(1, "# helper.py\nVALUE = 41\n", "helper.py")
    uses_it = Block(5, "from helper import VALUE\nassert VALUE == 42, VALUE\n", None)
    result = run_block(uses_it, [module], tmp_path)
    assert result.returncode != 0
    assert "AssertionError: 41" in result.stderr
