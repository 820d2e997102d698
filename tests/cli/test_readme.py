"""The README and the tool agree: every example of README's Examples section that needs no camera, network,
cluster or display runs as written (from a folder laid out as the checkout, through segnet-console's entry
point) and writes what it says; ``--help``'s examples are README's; the JSON example is what the tool prints;
``--processes``' default is described as the code computes it."""

from __future__ import annotations

import glob
import json
import re
import shlex
from pathlib import Path

import pytest
from PIL import Image

from segnet.cli.console import EPILOG, PROG
from tests.conftest import ROOT
from tests.support.cli import run_cli

README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def example_commands() -> list[str]:
    """The command lines of the Examples section's first code block, continuation lines joined, comments cut."""
    block = section("Examples").split("```")[1]
    joined = re.sub(r"\\\n\s*", "", block)
    commands = []
    for line in joined.splitlines():
        command = re.split(r"\s+#\s", line, maxsplit=1)[0].strip()
        if command.startswith(PROG):
            commands.append(" ".join(command.split()))
    return commands


def needs_outside(command: str) -> str | None:
    """What an example needs that a test machine lacks, or None when it runs here."""
    words = shlex.split(command.partition(" | ")[0])
    if any(w.startswith("/dev/video") for w in words):
        return "a camera"
    if any("://" in w for w in words):
        return "a stream, a URL or a window"
    if any(w.endswith(".txt") and not w.startswith("--") for w in words[1:]):
        return "a list of cameras and streams"
    if any(w.startswith("--network") for w in words):
        return "a network download"
    if any(w.startswith("--ray") for w in words):
        return "a Ray cluster"
    return None


COMMANDS = example_commands()
LOCAL = [c for c in COMMANDS if needs_outside(c) is None]
PRINTED: dict[tuple[str, ...], str] = {}  # stdout of the examples run, by their words in any order


def run_example(words: list[str], cwd: Path):
    proc = run_cli(*words[1:], cwd=cwd)
    if proc.returncode == 0:
        PRINTED[tuple(sorted(words))] = proc.stdout
    return proc


def checkout_in(folder: Path) -> Path:
    """``folder`` laid out as the checkout's root, for reading: the bundled data, models and test data."""
    for name in ("data", "models"):
        (folder / name).symlink_to(ROOT / name)
    (folder / "tests").mkdir()
    (folder / "tests" / "data").symlink_to(ROOT / "tests" / "data")
    return folder


def as_the_shell_splits(command: str, cwd: Path) -> list[str]:
    """The words of ``command`` as sh gives them to the program: quotes removed, unquoted globs expanded."""
    words = []
    for word in shlex.split(command):
        quoted = f'"{word}"' in command or f"'{word}'" in command
        if glob.has_magic(word) and not quoted:
            matches = sorted(glob.glob(word, root_dir=cwd))
            assert matches, f"{word} matches nothing"
            words += matches
        else:
            words.append(word)
    return words


def jq_path(record: dict, expression: str):
    """``.classes[3].fraction`` of a JSON record, as jq reads such a path."""
    value = record
    for key, index in re.findall(r"\.(\w+)|\[(\d+)\]", expression):
        value = value[key] if key else value[int(index)]
    return value


def test_the_examples_section_has_local_examples_and_names_the_others():
    assert len(LOCAL) >= 12, LOCAL
    assert {needs_outside(c) for c in COMMANDS} - {None} == {
        "a stream, a URL or a window", "a camera", "a list of cameras and streams", "a network download"}


@pytest.mark.parametrize("command", LOCAL, ids=[c[len(PROG) + 1:][:60] for c in LOCAL])
def test_a_readme_example_runs_as_written(command, tmp_path):
    if ".mp4" in command:
        pytest.importorskip("av")
    work = checkout_in(tmp_path)
    head, _, pipe = command.partition(" | ")
    words = as_the_shell_splits(head, work)
    assert words[0] == PROG
    last = words[-1]
    target = work / last
    inputs = [w for w in words[1:-1] if not w.startswith("-")]
    images = sorted({Path(f).name for w in inputs for f in glob.glob(w if not w.endswith("/") else f"{w}*.jpg",
                                                                         root_dir=work)})
    done_before = []
    if "--skip-existing" in words:  # resuming: the pictures of all but the small camvid frames are there already
        target.mkdir()
        done_before = [target / name for name in images if not name.startswith("camvid")]
        for path in done_before:
            path.write_bytes(b"done before")
    before = set(work.iterdir())
    proc = run_example(words, work)
    assert proc.returncode == 0, proc.stderr
    assert "error" not in proc.stderr, proc.stderr
    if (work / last).resolve().is_relative_to(ROOT):  # the last path is an input: nothing is written
        assert set(work.iterdir()) == before
        assert proc.stdout.strip(), "an example that writes nothing prints something"
    elif last.endswith("/"):
        assert sorted(p.name for p in target.iterdir()) == images
        for path in target.iterdir():
            if path in done_before:
                assert path.read_bytes() == b"done before"
                continue
            with Image.open(path) as picture:
                picture.load()
        assert len(done_before) < len(images)
    elif target.suffix == ".mp4":
        from tests.support.streams import count_frames

        assert count_frames(target)[0] == 8
    else:
        with Image.open(target) as picture:
            picture.load()
    if pipe:
        assert pipe.startswith("jq ")
        records = [json.loads(line) for line in proc.stdout.splitlines()]
        assert records and all(isinstance(jq_path(r, pipe.split()[1]), float) for r in records)


def test_the_help_examples_are_the_readme_examples():
    shown = []
    for line in EPILOG.splitlines():
        if line.startswith(f"  {PROG} "):
            command = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
            shown.append(" ".join(command.split()))
    assert len(shown) >= 10
    assert [c for c in shown if c not in COMMANDS] == []


def test_the_json_example_is_what_the_tool_prints(tmp_path):
    pytest.importorskip("av")
    block = section("Sources and outputs").split("```json")[1].split("```")[0]
    shown = " ".join(block.split())
    assert shown.endswith(", ...]}")
    example = json.loads(shown.replace(", ...]}", "]}"))
    command = section("Sources and outputs").split("**Statistics as data.**")[1].split("```")[1].strip()
    words = as_the_shell_splits(command.partition(" | ")[0], checkout_in(tmp_path))
    if tuple(sorted(words)) not in PRINTED:  # the Examples section's run of the same words is reused
        proc = run_example(words, tmp_path)
        assert proc.returncode == 0, proc.stderr
    printed = [line for line in PRINTED[tuple(sorted(words))].splitlines()
               if json.loads(line)["frame"] == example["frame"]]
    assert len(printed) == 1
    assert printed[0].startswith(shown.replace(", ...]}", ""))  # the very text, numbers printed in full


def test_the_processes_default_is_described_as_the_code_computes_it(monkeypatch):
    from segnet import Options
    from segnet.run import processes

    for cores, expected in ((2, 0), (4, 0), (5, 4), (16, 15)):
        monkeypatch.setattr(processes, "cores", lambda cores=cores: cores)
        assert processes.count(Options(), None) == expected
    described = "cores - 1 on machines with more than 4 cores, else"
    row = next(line for line in README.splitlines() if line.startswith("| `--processes N`"))
    assert described in " ".join(row.replace("−", "-").replace("`", "").split())
    help_text = " ".join(run_cli("--help").stdout.split())
    assert described in help_text
