"""Every command the docs tell a reader to type is one the project accepts.

The docs are README.md, docs/*.md and data/external/README.md, as committed. From their fenced
code blocks (bash, sh, shell, console or unlabelled) and their inline code spans, every command
that runs ``dvc exp run``, ``dvc queue``, ``dvc repro``, ``python -m ...`` or an ``aes-...`` entry
point is checked:

- each ``-S key=value`` (quoted or not; ``a,b`` a sweep of values) and each override of a profile
  it reads (``$(grep -v '^#' profiles/X.args)``; ``$(cat profiles/X.args)`` only for a profile
  without comment lines, since ``cat`` would hand the comments to dvc) is a known params key with
  a valid value, applied together to the committed params.yaml as DVC would;
- ``dvc exp run`` / ``dvc repro`` targets are stages of dvc.yaml;
- ``python -m MODULE`` resolves to a module; ``aes-NAME`` is an entry point of pyproject.toml;
- every relative path it names exists in the tree, unless it is a DVC out (or inside one) or a
  path the command writes (``--json PATH``).

A failure names the doc, the line, the command and what is wrong with it.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

from aes.core.errors import AESError
from aes.core.params import parse_override_items, parse_yaml, read_overrides
from aes.data.params import validate, with_overrides
from tests.committed import committed_params, committed_text

ROOT = Path(__file__).resolve().parents[1]
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
INLINE = re.compile(r"`([^`\n]+)`")
PROFILE = re.compile(r"\$\((grep -v '\^#'|cat) (profiles/[\w.-]+\.args)\)")
COMMANDS = (("dvc", "exp", "run"), ("dvc", "queue"), ("dvc", "repro"))
RUNS_STAGES = (("dvc", "exp", "run"), ("dvc", "repro"))
VALUE_OPTIONS = {"-n", "--name", "-j", "--jobs", "-m", "--message", "-r", "--remote", "--rev", "--tolerance", "--root", "--report",
                 "--block", "--dataset", "--grid", "--params", "--objective", "--n", "--per-prompt", "--prompt", "--topic"}
WRITES = {"--json", "-o", "--out"}  # options whose value is a path the command creates
PATH_LIKE = re.compile(r"^[\w.-]+(/[\w.{},*-]*)+$|^[\w-]+\.(csv|json|yaml|yml|args|md|py|lock|tsv|zip)$")


def doc_files() -> list[str]:
    """The committed docs: README.md, docs/*.md, data/external/README.md."""
    proc = subprocess.run(["git", "ls-tree", "-r", "--name-only", "HEAD", "docs"], cwd=ROOT, capture_output=True, text=True)
    pages = [p for p in proc.stdout.split() if p.endswith(".md")] if proc.returncode == 0 else \
        [str(p.relative_to(ROOT)) for p in sorted((ROOT / "docs").glob("*.md"))]
    return ["README.md", *sorted(pages), "data/external/README.md"]


def shell_snippets(text: str) -> list[tuple[int, str]]:
    """(line number, command text) of every shell line in fenced blocks (continuations joined, a
    console prompt dropped) and of every inline code span that starts with a command."""
    out, fence, pending = [], None, None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if match:
            fence = None if fence is not None else match.group(2).lower()
            continue
        if fence is not None:
            if fence not in SHELL_LANGS:
                continue
            body = line.strip().removeprefix("$ ")
            if pending is not None:
                start, previous = pending
                body = previous + " " + body
            else:
                start = number
            if body.endswith("\\"):
                pending = (start, body[:-1].rstrip())
                continue
            pending = None
            if body and not body.startswith("#"):
                out.append((start, body))
        else:
            out += [(number, span) for span in INLINE.findall(line) if is_command(span.split())]
    return out


def is_command(words: list[str]) -> bool:
    """Whether ``words`` start one of the commands this test checks."""
    if any(tuple(words[: len(c)]) == c for c in COMMANDS):
        return True
    if words[:2] == ["python", "-m"] or (len(words) > 2 and words[0].startswith("python3") and words[1] == "-m"):
        return True
    return bool(words) and words[0].startswith("aes-")


def split_commands(snippet: str) -> list[list[str]]:
    """The words of each simple command in ``snippet`` (split at ``&&``, ``||``, ``;``, ``|``; a
    trailing comment dropped); a profile substitution becomes one word ``@profile:<how>:<path>``."""
    snippet = PROFILE.sub(lambda m: f"@profile:{'grep' if m.group(1) != 'cat' else 'cat'}:{m.group(2)}", snippet)
    lexer = shlex.shlex(snippet, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split, lexer.commenters = True, "#"
    commands, words = [], []
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote: prose, not a command
        return []
    for token in tokens:
        if set(token) <= set(";&|"):
            commands.append(words)
            words = []
        else:
            words.append(token)
    return [c for c in [*commands, words] if c]


def dvc_outs() -> list[str]:
    """Every out, metric and plot path that dvc.yaml declares."""
    stages = parse_yaml(committed_text("dvc.yaml"), "dvc.yaml")["stages"]
    paths = []
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                paths.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return paths


def stage_names() -> set[str]:
    return set(parse_yaml(committed_text("dvc.yaml"), "dvc.yaml")["stages"])


def entry_points() -> set[str]:
    return set(tomllib.loads(committed_text("pyproject.toml"))["project"]["scripts"])


def sweep_values(raw: str) -> list:
    """The values DVC runs for ``-S key=raw``: a list or a mapping is one value; ``a,b,c`` a sweep of three."""
    if raw.startswith(("[", "{")) or "," not in raw:
        return [raw]
    return raw.split(",")


def check_overrides(items: list[str], profiles: list[str], where: str) -> list[str]:
    """Problems with the overrides of one command: the profiles' first, then its own ``-S`` items, applied together."""
    problems, overrides = [], {}
    for how, path in profiles:
        if not (ROOT / path).exists():
            problems.append(f"{where}: profile {path} does not exist")
            continue
        if how == "cat" and any(line.lstrip().startswith("#") for line in (ROOT / path).read_text().splitlines()):
            problems.append(f"{where}: $(cat {path}) passes its comment lines to dvc; use $(grep -v '^#' {path})")
        try:
            overrides.update(read_overrides(ROOT / path))
        except AESError as err:
            problems.append(f"{where}: {err}")
    sweeps = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            problems.append(f"{where}: -S {item!r} has no '='")
            continue
        sweeps[key] = sweep_values(raw)
    base = validate(committed_params())
    runs = [{k: v[0] for k, v in sweeps.items()}]  # every sweep value in turn, the other keys at their first value
    runs += [{**runs[0], key: value} for key, values in sweeps.items() for value in values[1:]]
    for run in runs:
        try:
            with_overrides(base, {**overrides, **parse_override_items([f"{k}={v}" for k, v in run.items()], where)}, where)
        except AESError as err:
            unknown = re.search(r"'([\w.]+)' is not a params key", str(err))
            close = closest_key(unknown.group(1), base) if unknown else None
            problems.append(str(err) + (f" (did you mean '{close}'?)" if close else ""))
    return list(dict.fromkeys(problems))  # a sweep can meet the same fault once per value


def dotted_keys(params: dict, where: str = "") -> list[str]:
    """Every leaf key of ``params`` in dotted form ("finetune.epochs")."""
    keys = []
    for key, value in params.items():
        keys += dotted_keys(value, f"{where}{key}.") if isinstance(value, dict) else [f"{where}{key}"]
    return keys


def closest_key(key: str, params: dict) -> str | None:
    """The params key a mistyped dotted ``key`` most likely meant: the one key with the same last
    part ('prepare.groups' -> 'prepare.ellipse.groups'), else the closest spelling; None if none is close."""
    keys = dotted_keys(params)
    same_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
    if len(same_leaf) == 1:
        return same_leaf[0]
    close = difflib.get_close_matches(key, same_leaf or keys, n=1)
    return close[0] if close else None


def is_dvc_out(path: str, outs: list[str]) -> bool:
    path = path.rstrip("/")
    return any(path == out or path.startswith(out.rstrip("/") + "/") or out.startswith(path + "/") for out in outs)


def check_command(words: list[str], where: str, outs: list[str]) -> list[str]:
    """Problems with one simple command (its words as the shell splits them)."""
    problems, items, profiles, targets = [], [], [], []
    runs_stages = any(tuple(words[: len(c)]) == c for c in RUNS_STAGES)
    module = words[2] if len(words) > 2 and words[1] == "-m" and words[0].startswith("python") else None
    if module is not None and module.startswith(("aes", "stages")) and "<" not in module and importlib.util.find_spec(module) is None:
        problems.append(f"{where}: python -m {module}: no such module")
    if words[0].startswith("aes-") and words[0] not in entry_points():
        problems.append(f"{where}: {words[0]} is not an entry point of pyproject.toml ({', '.join(sorted(entry_points()))})")
    start = 3 if runs_stages and words[1] == "exp" else 2 if runs_stages else 3 if module else 1
    i = start
    while i < len(words):
        word = words[i]
        if word in ("-S", "--set-param") and i + 1 < len(words):
            if not any(gap in words[i + 1] for gap in ("…", "...")):  # `-S …`: a placeholder in prose
                items.append(words[i + 1])
            i += 2
            continue
        if word.startswith("@profile:"):
            profiles.append(tuple(word.split(":", 2)[1:]))
        elif word in WRITES:
            i += 2  # the path it writes need not exist
            continue
        elif word in VALUE_OPTIONS:
            i += 2
            continue
        elif word.startswith("-") or "<" in word or ">" in word or "..." in word or "$" in word:
            pass
        elif PATH_LIKE.match(word) and not word.startswith(("/", "~")) and "://" not in word:
            if not (ROOT / word).exists() and not is_dvc_out(word, outs):
                problems.append(f"{where}: path {word} does not exist in the tree and is no DVC out")
        elif runs_stages and re.fullmatch(r"[a-z_]+", word):
            targets.append(word)
        i += 1
    if runs_stages:
        problems += [f"{where}: {t!r} is not a stage of dvc.yaml" for t in targets if t not in stage_names()]
    if items or profiles:
        problems += check_overrides(items, profiles, where)
    return problems


def doc_problems(doc: str) -> list[str]:
    outs = dvc_outs()
    problems = []
    for number, snippet in shell_snippets(committed_text(doc)):
        for words in split_commands(snippet):
            if is_command(words):
                problems += check_command(words, f"{doc}:{number}: `{' '.join(words)}`", outs)
    return problems


@pytest.mark.parametrize("doc", doc_files())
def test_every_command_in_the_docs_is_valid(doc):
    problems = doc_problems(doc)
    assert not problems, "\n".join(problems)


def test_the_docs_show_the_commands_people_type():
    """The checks above see the commands at all: the front page's set-up, a sweep, a profile, a module."""
    snippets = [s for doc in doc_files() for _, s in shell_snippets(committed_text(doc))]
    commands = [w for s in snippets for w in split_commands(s) if is_command(w)]
    assert any(w[:2] == ["dvc", "repro"] for w in commands)
    assert any(w[:3] == ["dvc", "exp", "run"] and "--queue" in w for w in commands)
    assert any(w[0].startswith("@profile:") or any(x.startswith("@profile:") for x in w) for w in commands)
    assert any(w[:2] == ["python", "-m"] for w in commands)


@pytest.mark.parametrize("text, message", [
    ("```bash\ndvc exp run --queue -S 'prepare.groups=prompt,topic'\n```\n",
     r"doc.md:2: .*'prepare.groups' is not a params key \(did you mean 'prepare.ellipse.groups'\?\)"),
    ("Use `dvc exp run -S data.source=csv -S data.csv_path=data/external/my.csv` here.\n",
     r"doc.md:1: .*'data.csv_path' is not a params key \(did you mean 'data.ellipse.csv_path'\?\)"),
    ("```\ndvc exp run -S data.source=csv -S 'prepare.targets=[Overall]'\n```\n", r"doc.md:2: .*finetune.target_weights"),
    ("```sh\ndvc exp run -S 'dro.eta=0.1,-1'\n```\n", r"key 'dro.eta' must be"),
    ("```bash\ndvc exp run $(cat profiles/asap.args)\n```\n", r"passes its comment lines to dvc"),
    ("```bash\ndvc exp run $(grep -v '^#' profiles/nope.args)\n```\n", r"profile profiles/nope.args does not exist"),
    ("```console\n$ python -m aes.ops.no_such_thing\n```\n", r"python -m aes.ops.no_such_thing: no such module"),
    ("```bash\naes-nothing --help\n```\n", r"aes-nothing is not an entry point"),
    ("```bash\ndvc exp run -S objective=grl finetune_vc\n```\n", r"'finetune_vc' is not a stage of dvc.yaml"),
    ("```bash\npython -m aes.ops.compare_heads bench/nope.json data/predictions/gbm_cv.csv\n```\n",
     r"path bench/nope.json does not exist"),
])
def test_a_wrong_command_is_named_with_its_doc_line_and_key(text, message):
    problems = []
    for number, snippet in shell_snippets(text):
        for words in split_commands(snippet):
            if is_command(words):
                problems += check_command(words, f"doc.md:{number}: `{' '.join(words)}`", dvc_outs())
    assert re.search(message, "\n".join(problems)), problems


def test_right_commands_pass():
    text = ("```bash\n"
            "dvc exp run --queue -S 'prepare.ellipse.groups=prompt,topic'   # one experiment per value\n"
            "dvc exp run -S data.source=csv -S data.ellipse.csv_path=data/external/<your-file>.csv \\\n"
            "    -S 'prepare.targets=[Overall]' -S 'finetune.target_weights=[1.0]'\n"
            "dvc exp run $(grep -v '^#' profiles/asap.args) && dvc exp show --only-changed\n"
            "python -m aes.ops.compare_heads /tmp/seven.csv data/predictions/finetune_cv.csv\n"
            "aes-readme --block asap --report reports/asap/report.json\n"
            "python -m aes.ops.repro_check --json /tmp/check.json\n"
            "```\n")
    snippets = shell_snippets(text)
    assert [n for n, _ in snippets] == [2, 3, 5, 6, 7, 8]
    problems = [p for n, s in snippets for w in split_commands(s) if is_command(w) for p in check_command(w, f"doc.md:{n}", dvc_outs())]
    assert problems == []
