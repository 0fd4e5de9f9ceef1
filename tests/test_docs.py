"""The docs check (``nox -s docs``): every runnable command in the README and docs/ still works, every link resolves.

Convention (docs/development.md): a fenced block marked ```bash holds runnable commands, one per line (``\\``
continues a line, ``#`` starts a comment); ```text blocks and code spans are not checked. Each command is checked
without doing its work:

- ``python ablations/run.py ...`` runs as ``--dry-run`` (unless it is ``--list``, ``--status`` or ``--dry-run``);
- any other ``python <script>`` / ``python -m <module>`` parses its arguments with the entry point's own parser and
  stops there (``argparse.ArgumentParser.parse_args`` is patched to stop after a successful parse); each entry point's
  ``--help`` runs once too;
- ``python -m pytest <files>`` needs the files; ``nox -s NAME`` needs a session of that name in noxfile.py;
  ``bash <script>`` needs the script; ``pip``, ``cd`` and environment set-up lines are skipped.

Relative links and images must name a file of the repository, and a ``#anchor`` a heading of that page (GitHub's
slugs).
"""

import argparse
import contextlib
import io
import os
import re
import runpy
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIPPED = {"pip", "cd", ".", "source", "export", "python3"}  # set-up lines: not entry points
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def doc_files(root: Path = ROOT) -> list:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Command:
    file: str
    line: int
    text: str

    @property
    def argv(self) -> list:
        return shlex.split(self.text, comments=True)


def commands(path: Path) -> list:
    """The runnable commands of a Markdown file: the lines of its ```bash blocks, continuations joined."""
    text, out = path.read_text(), []
    for block in FENCE.finditer(text):
        if block.group(1) != "bash":
            continue
        first = text.count("\n", 0, block.start(2)) + 1
        pending, start = "", first
        for i, line in enumerate(block.group(2).splitlines()):
            if not pending:
                start = first + i
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            full = " ".join((pending + line).split())
            pending = ""
            if full and not full.startswith("#"):
                out.append(Command(path.name, start, full))
    return out


# ---------------------------------------------------------------- running a command without doing its work


class Parsed(Exception):
    """Raised by the patched parser once the arguments parsed."""


@contextlib.contextmanager
def parse_only():
    """Make every ArgumentParser stop (raise Parsed) right after a successful parse."""
    parse_args, parse_known = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args
    depth = [0]

    def stop_after_parse(self, *args, **kwargs):
        depth[0] += 1
        try:
            parse_args(self, *args, **kwargs)  # exits 2 on an unknown flag or a bad value
        finally:
            depth[0] -= 1
        raise Parsed

    def stop_after_known(self, *args, **kwargs):
        result = parse_known(self, *args, **kwargs)
        if depth[0]:  # inside parse_args, which still checks the leftovers
            return result
        raise Parsed

    argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args = stop_after_parse, stop_after_known
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args = parse_args, parse_known


def run_entry_point(target: str, args: list, root: Path, module: bool, env: dict, only_parse: bool) -> str | None:
    """Run ``python [-m] target args`` in this process from ``root``; None if it went well, else what went wrong."""
    out, err = io.StringIO(), io.StringIO()
    old_argv, old_cwd, old_env = sys.argv, os.getcwd(), dict(os.environ)
    sys.argv = [target, *args]
    os.environ.update(env)
    os.chdir(root)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                (parse_only() if only_parse else contextlib.nullcontext()):
            if module:
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(str(root / target), run_name="__main__")
    except Parsed:
        return None
    except SystemExit as e:
        if e.code in (0, None):
            return None
        return f"exit {e.code}: {(err.getvalue() or out.getvalue()).strip()[-1500:]}"
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)
    return None if only_parse is False else "ran to the end without parsing its arguments"


def nox_sessions(root: Path) -> set:
    return set(re.findall(r"@nox\.session[^\n]*\ndef (\w+)\(", (root / "noxfile.py").read_text()))


def check(cmd: Command, root: Path = ROOT) -> str | None:
    """None if the command is fine (or a set-up line), else the reason it fails."""
    argv = cmd.argv
    env = {}
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):
        key, _, value = argv.pop(0).partition("=")
        env[key] = value
    tool, args = argv[0], argv[1:]
    if tool in SKIPPED:
        return None
    if tool == "nox":
        if "--" in args:
            args = args[:args.index("--")]
        names = [a for flag, a in zip(args, args[1:], strict=False) if flag in ("-s", "--session", "--sessions")]
        names += [a for a in args if not a.startswith("-") and a not in names]
        unknown = sorted(set(names) - nox_sessions(root))
        return f"no nox session {unknown} in noxfile.py" if unknown else None
    if tool == "bash":
        return None if (root / args[0]).is_file() else f"no script {args[0]}"
    if tool != "python":
        return f"{tool!r}: not a kind of command the docs check knows (python, nox, bash, pip)"
    if args[:2] == ["-m", "pytest"]:
        missing = [a for a in args[2:] if a.endswith(".py") and not (root / a.split("::")[0]).is_file()]
        return f"no test file {missing}" if missing else None
    module = args[0] == "-m"
    target, rest = (args[1], args[2:]) if module else (args[0], args[1:])
    if not module and not (root / target).is_file():
        return f"no script {target}"
    if target == "ablations/run.py" and not {"--list", "--status", "--dry-run", "--help"} & set(rest):
        rest = [*rest, "--dry-run"]
    full_run = target == "ablations/run.py" or "--help" in rest
    return run_entry_point(target, rest, root, module, env, only_parse=not full_run)


ALL_COMMANDS = [c for f in doc_files() for c in commands(f)]


@pytest.mark.parametrize("cmd", ALL_COMMANDS, ids=[f"{c.file}:{c.line}" for c in ALL_COMMANDS])
def test_documented_command_works(cmd):
    assert check(cmd) is None, f"{cmd.file}:{cmd.line}: {cmd.text}\n{check(cmd)}"


def entry_points() -> list:
    """Each python entry point the docs use, as (target, is_module)."""
    seen = {}
    for c in ALL_COMMANDS:
        argv = [a for a in c.argv if not re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", a)]
        if argv[0] == "python" and argv[1:3] != ["-m", "pytest"]:
            target, module = (argv[2], True) if argv[1] == "-m" else (argv[1], False)
            seen[target] = module
    return sorted(seen.items())


@pytest.mark.parametrize(("target", "module"), entry_points())
def test_entry_point_help(target, module, capsys):
    assert run_entry_point(target, ["--help"], ROOT, module, {}, only_parse=False) is None


def test_the_docs_have_commands_of_every_entry_point():
    targets = {t for t, _ in entry_points()}
    assert {"vdt.train", "metrics/evaluate.py", "ablations/run.py", "metrics/report.py",
            "benchmarks/bench_model_speed.py"} <= targets
    assert any("--profile paper" in c.text and "ucf101:" in c.text and "--executor slurm" in c.text
               for c in commands(ROOT / "docs" / "cluster.md"))


# ---------------------------------------------------------------- links


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set:
    text = FENCE.sub("", path.read_text())
    found, seen = set(), {}
    for h in re.findall(r"^#{1,6} (.+)$", text, re.M):
        s = slug(h)
        found.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return found


def broken_links(path: Path, root: Path = ROOT) -> list:
    """Every relative link or image of a Markdown file whose file (or #anchor) does not exist."""
    bad = []
    for target in LINK.findall(FENCE.sub("", path.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists() or root.resolve() not in dest.parents:
            bad.append(f"{target}: no such file in the repository")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.name}")
    return bad


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.name)
def test_links_resolve(path):
    assert broken_links(path) == []


def test_readme_is_short_and_reaches_the_cluster_command():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 210
    assert "docs/cluster.md#the-conditioning-sweep-on-ucf-101-on-slurm" in readme


def test_no_reference_outside_the_repository():
    """Docs and code cite public sources, not notes kept outside the repository."""
    pattern = re.compile(r"shared/reference|core issue|the issue's|reference notes?\b", re.I)
    files = [*doc_files(), *ROOT.glob("vdt/**/*.py"), *ROOT.glob("metrics/*.py"), *ROOT.glob("ablations/*.py"),
             *ROOT.glob("benchmarks/*.py"), *ROOT.glob("scripts/*.sh"), *ROOT.glob("tests/*.py")]
    hits = [f"{f.relative_to(ROOT)}:{i}" for f in files if f.name != "test_docs.py"
            for i, line in enumerate(f.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


# ---------------------------------------------------------------- the check fails when it should


def test_a_renamed_flag_in_a_copy_of_an_entry_point_fails(tmp_path):
    cmd = next(c for c in ALL_COMMANDS if c.text.startswith("python ablations/run.py") and "--seeds" in c.text)
    assert check(cmd) is None
    (tmp_path / "ablations").mkdir()
    source = (ROOT / "ablations" / "run.py").read_text()
    assert source.count('"--seeds"') == 1
    (tmp_path / "ablations" / "run.py").write_text(source.replace('"--seeds"', '"--seed-list"'))
    assert "unrecognized arguments: --seeds" in check(cmd, tmp_path)


def test_a_renamed_flag_in_a_copy_of_the_docs_fails(tmp_path):
    shutil.copy(ROOT / "noxfile.py", tmp_path)
    doc = tmp_path / "page.md"
    doc.write_text("Run:\n\n```bash\npython -m vdt.train --run-dir runs/x \\\n    --steps 3\nnox -s lint\n```\n\n"
                   "```text\npython -m vdt.train --not-checked\n```\n")
    good = commands(doc)
    assert [c.text for c in good] == ["python -m vdt.train --run-dir runs/x --steps 3", "nox -s lint"]
    assert good[0].line == 4 and all(check(c, tmp_path) is None for c in good)
    doc.write_text(doc.read_text().replace("--run-dir", "--run-directory").replace("-s lint", "-s lint2"))
    bad = [check(c, tmp_path) for c in commands(doc)]
    assert "unrecognized arguments: --run-directory" in bad[0] and "lint2" in bad[1]
    doc.write_text("```bash\npython ablations/run.py --sweep nosuch\n```\n")
    assert "nosuch" in check(commands(doc)[0])


def test_a_broken_link_or_anchor_fails(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n## A `flag`: here\n\n```bash\n# not a heading\n```\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#a-flag-here) [top](a.md#title) [web](https://example.org/x#y)\n")
    assert broken_links(page, tmp_path) == []
    page.write_text("[gone](c.md) [anchor](a.md#not-a-heading) [code](a.md#not-a-heading-1)\n")
    assert len(broken_links(page, tmp_path)) == 3


@pytest.mark.parametrize("path", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: p.name)
def test_each_docs_page_starts_with_the_question_it_answers(path):
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert lines[0].startswith("# ") and lines[1].startswith("**") and "?" in lines[1] + lines[2]
