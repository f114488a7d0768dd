"""Every `standby ...` command the README and docs/ show parses with the command's real parser,
so a renamed flag or subcommand cannot leave the docs behind (the commands themselves are run by
the integration and end-to-end tests named next to them)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from services import cli

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# `standby` as a command: at the start of a code line or inline span, or after a pipe / `&&`.
COMMAND = re.compile(r"(?:^\s*|`|\|\s*|&&\s*)(standby(?: [^`|>#&\n]*)?)", re.M)


def shown() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text().replace("\\\n", " ")
        for match in COMMAND.finditer(text):
            command = match.group(1).strip()
            words = shlex.split(command)
            if len(words) > 1 and not words[1].startswith("-") and words[1].islower() and words[1] != "cluster":
                found.append((doc.name, command))
    return found


def subcommands() -> set[str]:
    parser = cli.build_parser()
    return set(next(a for a in parser._actions if a.dest == "command").choices or ())  # type: ignore[union-attr]


def test_the_docs_show_the_operator_commands() -> None:
    subcommands = {shlex.split(c)[1] for _, c in shown()}
    assert {"status", "failover", "managed-cluster", "stream-keys", "nats-credentials", "dev"} <= subcommands


@pytest.mark.parametrize(("doc", "command"), shown())
def test_a_command_in_the_docs_parses(doc: str, command: str) -> None:
    words = shlex.split(command)[1:]
    if len(words) == 1:  # a command named in prose: it exists
        assert words[0] in subcommands(), f"{doc}: `{command}` is not a command"
        return
    try:
        cli.build_parser().parse_args(words)
    except SystemExit as exc:
        pytest.fail(f"{doc}: `{command}` does not parse (exit {exc.code})")
