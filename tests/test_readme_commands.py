"""Every ``clip2video ...`` command in the README's code blocks parses (issue 11 §1).

Each command is run with ``--help`` (its verb must exist: argparse exits 0) and parsed as written
without running it (every flag and choice must exist), so a README line with a wrong verb or flag
fails here instead of in a user's terminal.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from clip2video.cli import build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"
EXTENDING = README.parent / "docs" / "EXTENDING.md"
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def readme_commands(text: str) -> list[str]:
    """The ``clip2video`` command lines of every fenced code block (``\\`` continuations joined)."""
    commands: list[str] = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ").strip()
            if line.startswith("clip2video ") or line == "clip2video":
                commands.append(line)
    return commands


def _argv(command: str) -> list[str]:
    """The arguments after ``clip2video`` (shell comments dropped)."""
    words = shlex.split(command, comments=True)
    assert words[0] == "clip2video", command
    return words[1:]


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def test_the_readme_has_commands() -> None:
    """The extraction finds the README's command lines (an empty list would make the test vacuous)."""
    assert len(COMMANDS) >= 5, COMMANDS
    assert readme_commands("```bash\nclip2video tables   # x\n$ clip2video drift \\\n  --rerun\n```\n") == [
        "clip2video tables   # x",
        "clip2video drift    --rerun",
    ]


TOY_MODEL = README.parent / "tests" / "support" / "toys" / "toy_model.py"


@pytest.fixture
def in_a_user_folder(tmp_path, monkeypatch):
    """A folder holding what the README's "your own model" journey copies there (my_models.py)."""
    from clip2video.models.registry import MODELS

    shutil.copy(TOY_MODEL, tmp_path / "my_models.py")
    monkeypatch.chdir(tmp_path)
    # the same toy may be registered by other tests under its test module's name: set it aside
    before = MODELS.info("toy_mean_colour") if "toy_mean_colour" in MODELS else None
    entry = MODELS.unregister("toy_mean_colour")
    yield tmp_path
    MODELS.unregister("toy_mean_colour")
    if entry is not None:  # leave the registry as the other tests expect it
        MODELS.register(entry, name="toy_mean_colour", **(before or {}))
    sys.modules.pop("my_models", None)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_has_help(command: str, capsys: pytest.CaptureFixture[str], in_a_user_folder) -> None:
    """``<command> --help`` exits 0: the verb (and sub-verb) exists."""
    with pytest.raises(SystemExit) as exit_info:
        main([*_argv(command), "--help"])
    out = capsys.readouterr()
    assert exit_info.value.code == 0, f"`{command} --help` exited {exit_info.value.code}: {out.err}"
    assert "usage: clip2video" in out.out


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The command as written parses: every flag, choice and positional exists (nothing is run)."""
    argv = _argv(command)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0 and ("--help" in argv or "-h" in argv):
            return  # a README line that asks for help (its --help test is above)
        pytest.fail(f"README command `{command}` does not parse: {capsys.readouterr().err.strip()}")
        raise AssertionError from exc
    assert getattr(args, "func", None) is not None or not argv, f"`{command}` names no verb"


EXTENDING_COMMANDS = readme_commands(EXTENDING.read_text(encoding="utf-8"))


@pytest.mark.parametrize("command", EXTENDING_COMMANDS)
def test_extending_command_parses(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/EXTENDING.md's commands parse as written, once its toy modules are imported (as their
    ``--import`` does; the toy protocol's name is then a valid ``--protocol``)."""
    import tests.support.toys.toy_model
    import tests.support.toys.toy_postprocess
    import tests.support.toys.toy_protocol  # noqa: F401  (the --import modules of these commands)

    try:
        args = build_parser().parse_args(_argv(command))
    except SystemExit as exc:
        pytest.fail(f"EXTENDING.md command `{command}` does not parse: {capsys.readouterr().err.strip()}")
        raise AssertionError from exc
    assert getattr(args, "func", None) is not None, f"`{command}` names no verb"
    assert len(EXTENDING_COMMANDS) >= 3


@pytest.mark.parametrize(
    "command", ["clip2video ablaton --suite smoke", "clip2video ablation --suite smoke --no-such-flag"]
)
def test_a_wrong_verb_or_flag_is_caught(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The check above can fail: a misspelt verb or flag does not parse."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(_argv(command))
    assert exit_info.value.code != 0
    capsys.readouterr()


def test_the_own_model_journey_passes_the_check_with_only_the_files_it_names(in_a_user_folder) -> None:
    """README journey 4: my_models.py (the toy model) and the my_ablation.toml block of the README;
    the suite resolves (the base's rows and tables plus the user's) and passes the check before work."""
    from clip2video.pipeline import RunOptions, check
    from clip2video.plugins import import_modules

    text = README.read_text(encoding="utf-8")
    block = text[text.index("with `my_ablation.toml` beside it:") :]
    toml = FENCE.search(block).group(1)
    (in_a_user_folder / "my_ablation.toml").write_text(toml)
    import_modules(["my_models"], export=False)
    checked = check(RunOptions(suite="my_ablation.toml", tracking=False, results_dir=None))
    names = {p.name for p in checked.plan}
    assert {"mine-s0", "mine-s1", "mine-s2", "tdb-mlp-s0", "clip2video-K9-s2"} <= names
    assert [t.name for t in checked.suite.settings.tables][-1] == "mine"
    assert not (in_a_user_folder / "runs").exists()  # the check writes nothing
