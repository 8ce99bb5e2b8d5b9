"""Every command shown in the README and docs/ works as written, and every link resolves.

Commands of the bridge are parsed by the bridge's own argument parsers (each subcommand and
option must exist), `make` targets must be in the Makefile, `curl` requests are sent to a real
hub simulator and a real bridge, `docker compose` profiles must exist; a program the test does
not know fails it, so a new kind of command gets a check here. The README's commands must work
after its own set-up steps: the virtualenv activated, and every `--config` file either shipped
or made by an earlier step.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from bridge.app import Bridge
from bridge.cli import _parser as bridge_parser
from bridge.config import load_settings
from bridge.devtools.charger_sim import parser as charger_sim_parser
from bridge.hubsim import HubSimulator

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINKED = [*PAGES, ROOT / "bench" / "README.md"]
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
# Programs that are not ours and need no check beyond being named in a set-up step.
FOREIGN = {"cp", ".", "source", "openssl", "printf", "echo", "export"}
PLACEHOLDERS = {"FILE", "…", "..."}
SUBCOMMAND = "COMMAND"  # `oicp-bridge COMMAND --help`: any subcommand
# What the docs call the two ports; the test maps them to the real ones.
OPS_PORT, SIM_PORT = 9100, 9501


@dataclass(frozen=True)
class Command:
    page: Path
    line: int
    text: str
    inline: bool  # from a `code span` in prose rather than a code block

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}: {self.text}"


def fenced_blocks(text: str) -> Iterator[tuple[str, int, str]]:
    """(language, first line number, body) of every fenced code block."""
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
        yield match.group(1), text.count("\n", 0, match.start(2)) + 1, match.group(2)


def without_blocks(text: str) -> str:
    """``text`` with fenced code blocks blanked out (keeping line numbers)."""
    return re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.M | re.S)


def commands(page: Path) -> list[Command]:
    text = page.read_text(encoding="utf-8")
    found = []
    for language, first, body in fenced_blocks(text):
        if language not in SHELL_LANGUAGES:
            continue
        joined = body.replace("\\\n", " ")
        pending, start = "", 0
        for offset, raw in enumerate(joined.splitlines()):
            line = raw.strip()  # comments go when it is split (shlex)
            if not pending and (not line or line.startswith("#")):
                continue
            if not pending:
                start = offset
            pending = f"{pending} {line}" if pending else line
            if _complete(pending):  # a quoted argument may span lines (a JSON body)
                found.append(Command(page, first + start, pending, inline=False))
                pending = ""
        assert not pending, f"{page}: unclosed quote in: {pending}"
    prose = without_blocks(text)
    for match in re.finditer(r"`((?:\.venv/bin/)?oicp-bridge [^`]+)`", prose):
        line = prose.count("\n", 0, match.start()) + 1
        found.append(Command(page, line, match.group(1), inline=True))
    return found


def _complete(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


def _tokens(text: str) -> list[str]:
    """Shell words, with ``;``, ``&`` and ``|`` as words of their own."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def segments(command: Command) -> list[list[str]]:
    """The simple commands of a line, without redirections and variable assignments."""
    out: list[list[str]] = [[]]
    skip_next = False
    for token in _tokens(command.text):
        if skip_next:
            skip_next = False
        elif token in ("|", ";", "&", "&&", "||"):
            out.append([])
        elif token in ("<", ">", "2>"):
            skip_next = True  # the file name
        elif token.startswith(("<", ">")):
            continue
        elif not out[-1] and re.match(r"^[A-Z_][A-Z0-9_]*=", token):
            continue  # FOO=bar before the program
        else:
            out[-1].append(token)
    return [s for s in out if s]


def assignments(command: Command) -> dict[str, str]:
    """``NAME=value`` words that stand alone (``API=…; AUTH=…``, ``export NAME=…``)."""
    found: dict[str, str] = {}
    statement: list[str] = []
    for token in [*_tokens(command.text), ";"]:
        if token != ";":
            statement.append(token)
            continue
        words = [w for w in statement if w != "export"]
        if words and all(re.match(r"^[A-Z_][A-Z0-9_]*=", w) for w in words):
            for word in words:
                name, value = word.split("=", 1)
                found[name] = value
        statement = []
    return found


ALL = [c for page in PAGES for c in commands(page)]


def test_the_docs_show_commands() -> None:
    """The extraction still finds what it checks (a change of format must not empty it)."""
    programs = {segments(c)[0][0] for c in ALL if segments(c)}
    assert {"make", "oicp-bridge", "curl"} <= programs
    assert len(ALL) > 40


# -- the bridge's own commands -----------------------------------------------------------------
def program_args(argv: list[str]) -> tuple[str, list[str]] | None:
    """(which parser, its arguments) for a command of ours, else None."""
    name = argv[0].removeprefix(".venv/bin/")
    if name == "oicp-bridge":
        return "bridge", argv[1:]
    if name in ("python", "python3") and argv[1:2] == ["-m"]:
        module = argv[2]
        if module == "bridge":
            return "bridge", argv[3:]
        if module == "bridge.devtools.charger_sim":
            return "charger_sim", argv[3:]
    return None


def parse(parser: argparse.ArgumentParser, args: list[str]) -> None:
    """Parse as the command would; --help and --version are fine."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            parser.parse_args(args)
        except SystemExit as done:
            assert done.code == 0, err.getvalue()


OURS = [c for c in ALL for s in segments(c) if program_args(s) is not None]


@pytest.mark.parametrize("command", OURS, ids=str)
def test_every_command_of_ours_parses(command: Command) -> None:
    for argv in segments(command):
        found = program_args(argv)
        if found is None:
            continue
        which, args = found
        if command.inline:  # prose may leave values open: `--config FILE`, `oicp-bridge …`
            args = [a for a in args if a not in PLACEHOLDERS]
            if not args:
                continue  # the command named, not shown
            if args[-1] in ("--config", "-c"):
                args.append("config.yaml")
        if which == "bridge" and args[:1] == [SUBCOMMAND]:
            args[:1] = ["run"]
        parser = bridge_parser() if which == "bridge" else charger_sim_parser()
        parse(parser, args)


def config_files_created_by(page: Path) -> dict[str, int]:
    """Files the page's own steps make (``cp SRC DEST``), with the line they are made on."""
    made = {}
    for command in commands(page):
        for argv in segments(command):
            if argv[0] == "cp" and len(argv) == 3:
                made[argv[2]] = command.line
    return made


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_file_shown_exists_after_the_readme_set_up(page: Path) -> None:
    readme_steps = config_files_created_by(README)
    for command in commands(page):
        for argv in segments(command):
            found = program_args(argv)
            if found is None or ("--config" not in found[1] and "-c" not in found[1]):
                continue
            args = found[1]
            index = args.index("--config") if "--config" in args else args.index("-c")
            path = args[index + 1] if index + 1 < len(args) else "FILE"
            if path in PLACEHOLDERS or path.startswith("/etc/bridge/"):  # the container's
                continue
            if (ROOT / path).is_file():
                continue
            assert path in readme_steps, f"{command}: {path} neither ships nor is made"
            if page == README:  # ... by a step that comes before it
                assert readme_steps[path] < command.line, f"{command}: {path} made later"


def test_readme_activates_the_virtualenv_before_using_the_command() -> None:
    text = README.read_text(encoding="utf-8")
    activation = re.search(r"^\. \.venv/bin/activate\b", text, re.M)
    assert activation is not None
    activated_at = text.count("\n", 0, activation.start()) + 1
    for command in commands(README):
        for argv in segments(command):
            if argv[0] == "oicp-bridge" or argv[:3] == ["python", "-m", "bridge"]:
                assert command.line > activated_at, f"{command}: before the activation step"


# Commands that change nothing and need no running bridge: run as the README shows them.
SAFE = (["check-config"], ["fullload", "--dry-run"], ["--help"], ["data-quality"])


def test_readme_commands_run_after_its_set_up_steps(tmp_path: Path) -> None:
    """In a fresh directory with the shipped files: the README's cp step, then its commands."""
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "bridge.example.yaml", tmp_path / "config")
    ran = []
    for command in commands(README):
        for argv in segments(command):
            if argv[0] == "cp":
                shutil.copy(tmp_path / argv[1], tmp_path / argv[2])
                continue
            found = program_args(argv)
            if found is None or found[0] != "bridge":
                continue
            args = found[1]
            if not any(all(a in args for a in safe) for safe in SAFE):
                continue
            proc = subprocess.run(
                [sys.executable, "-m", "bridge", *args], cwd=tmp_path,
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert proc.returncode == 0, f"{command}: {proc.stderr}"
            ran.append(args[0])
    assert {"check-config", "fullload", "--help", "data-quality"} <= set(ran)


def test_the_console_script_is_what_the_docs_call() -> None:
    """No doc shows the old name (iproute2's `bridge`) as a command."""
    for page in PAGES:
        for command in commands(page):
            for argv in segments(command):
                assert argv[0] not in ("bridge", ".venv/bin/bridge"), str(command)


# -- make and docker ---------------------------------------------------------------------------
def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-z][\w-]*):", text, re.M))


@pytest.mark.parametrize(
    "command", [c for c in ALL if any(s[0] == "make" for s in segments(c))], ids=str
)
def test_every_make_target_exists(command: Command) -> None:
    for argv in segments(command):
        if argv[0] == "make":
            targets = [a for a in argv[1:] if "=" not in a]
            assert targets and set(targets) <= make_targets(), str(command)


def test_docker_compose_commands_use_what_the_compose_file_has() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    profiles = {p for s in compose["services"].values() for p in s.get("profiles", [])}
    shown = [c for c in ALL for s in segments(c) if s[:2] == ["docker", "compose"]]
    assert shown
    for command in shown:
        for argv in segments(command):
            if "--profile" in argv:
                assert argv[argv.index("--profile") + 1] in profiles, str(command)


# -- curl: sent to a real simulator and a real bridge ------------------------------------------
CURLS = [c for c in ALL for s in segments(c) if s[0] == "curl"]


def curl_request(argv: list[str]) -> tuple[str, str, bytes | None, dict[str, str]]:
    """(method, URL, body, headers) of a curl command line."""
    method, url, body, headers = "GET", None, None, {}
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-d", "--data"):
            body, method = next(args).encode(), "POST"
        elif arg in ("-X", "--request"):
            method = next(args)
        elif arg in ("-H", "--header"):
            name, _, value = next(args).partition(":")
            headers[name.strip()] = value.strip()
        elif arg.startswith("-"):
            continue  # -s, -v
        else:
            url = arg
    assert url is not None, argv
    return method, url if "://" in url else f"http://{url}", body, headers


def expand(word: str, variables: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` from what the page set before (and the test's token)."""
    return re.sub(
        r"\$\{?([A-Z_][A-Z0-9_]*)\}?", lambda m: variables.get(m.group(1), m.group(0)), word
    )


async def test_every_curl_request_is_answered(
    make_bridge: Callable[..., Awaitable[Bridge]],
) -> None:
    from bridge.api.tokens import hash_token

    token = "docs-test-token-0123456789abcdef"
    example = load_settings(ROOT / "config" / "bridge.example.yaml")  # the docs' EvseIDs
    bridge = await make_bridge(
        chargers=example.model_dump(mode="json")["chargers"],
        api={"tokens": [{"name": "docs", "hash": hash_token(token), "scope": "write"}]},
    )
    assert bridge.ops_server is not None
    ports = {OPS_PORT: bridge.ops_server.port}
    async with HubSimulator() as sim, httpx.AsyncClient(timeout=5) as http:
        ports[SIM_PORT] = sim.port
        variables: dict[Path, dict[str, str]] = {}
        for command in ALL:
            page_vars = variables.setdefault(command.page, {"TOKEN": token})
            page_vars.update(
                {k: expand(v, page_vars) for k, v in assignments(command).items() if v != "..."}
            )
            for argv in segments(command):
                if argv[0] != "curl":
                    continue
                method, url, body, headers = curl_request([expand(a, page_vars) for a in argv])
                parts = urlsplit(url)
                assert parts.hostname == "localhost" and parts.port in ports, str(command)
                real = parts._replace(netloc=f"127.0.0.1:{ports[parts.port]}").geturl()
                response = await http.request(method, real, content=body, headers=headers)
                assert response.status_code == 200, f"{command}: {response.text}"
                if parts.path.startswith("/api/"):  # an OCPI envelope: refusals are HTTP 200
                    code = response.json()["status_code"]
                    assert code == 1000 or (method == "POST" and code == 2000), (
                        f"{command}: {response.text}"
                    )
            sim.faults.clear()


# -- every program is one the test knows ------------------------------------------------------
def test_no_command_goes_unchecked() -> None:
    checked = {"make", "curl", "docker"}
    for command in ALL:
        for argv in segments(command):
            if program_args(argv) is None:
                assert argv[0] in checked | FOREIGN, f"{command}: add a check for {argv[0]}"


# -- links --------------------------------------------------------------------------------------
def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = without_blocks(page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


@pytest.mark.parametrize("page", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    text = without_blocks(page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    for link in links:
        if re.match(r"^[a-z]+:", link):
            continue  # https:, mailto:
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.relative_to(ROOT)}: {link}: no such file"
        if anchor:
            assert path.suffix == ".md", f"{page.relative_to(ROOT)}: {link}"
            assert anchor in anchors(path), f"{page.relative_to(ROOT)}: {link}: no such heading"
