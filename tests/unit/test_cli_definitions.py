"""``conveyor validate`` and ``conveyor graph`` through Typer's CliRunner."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from conveyor.cli import app

VALID = """\
name: hello
steps:
  - id: greet
    type: transform
    with: {value: "hello ${input.name}"}
  - id: shout
    type: transform
    needs: [greet]
    with: {value: "${steps.greet.output.upperAscii()}"}
  - id: other
    type: transform
    with: {value: 1}
"""

INVALID = """\
name: broken
steps:
  - id: fetch
    type: tsk
  - id: use
    type: transform
    needs: [fetc]
    when: "input.x +"
    with: {value: 1}
"""

runner = CliRunner()


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The CLI configures logging onto the streams CliRunner swaps in and closes afterwards;
    put logging back so later tests in the session do not write to a closed file."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {"valid": tmp_path / "valid.yaml", "invalid": tmp_path / "invalid.yaml", "yaml": tmp_path / "bad.yaml"}
    paths["valid"].write_text(VALID)
    paths["invalid"].write_text(INVALID)
    paths["yaml"].write_text("name: x\nsteps:\n  - id: a\n    with: {value: [1, 2}\n")
    return paths


def test_validate_valid_file(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["validate", str(files["valid"])])
    assert result.exit_code == 0, result.output
    assert f"✓ {files['valid']}: hello is valid (3 steps, roots: greet, other)" in result.output


def test_validate_invalid_file_lists_every_problem(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["validate", str(files["invalid"])])
    assert result.exit_code == 2  # the code `conveyor run` exits with for an invalid file
    lines = result.output.splitlines()
    assert lines[0] == f"✗ {files['invalid']}: workflow 'broken' is invalid (3 problems)"
    assert lines[1].startswith("  steps[0].type: unknown step type 'tsk' (known: ")
    assert lines[2] == "  steps[1].needs[0]: unknown step 'fetc' (did you mean 'fetch'?)"
    assert lines[3].startswith("  steps[1].when: cannot compile 'input.x +': line 1, column 10: Syntax error")
    assert lines[4:6] == ["      | input.x +", "      | .........^"]  # the caret stays under the token


def test_validate_malformed_yaml_shows_line_and_column(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["validate", str(files["yaml"])])
    assert result.exit_code == 2  # the code `conveyor run` exits with for an invalid file
    assert "line 4, column 24: expected ',' or ']', but got '}'" in result.output


def test_validate_several_files_summarises(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["validate", str(files["valid"]), str(files["invalid"]), str(files["yaml"])])
    assert result.exit_code == 2  # the code `conveyor run` exits with for an invalid file
    assert result.output.splitlines()[-1] == "1 valid, 2 invalid"


def test_validate_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2  # the code `conveyor run` exits with for an invalid file
    assert "cannot read the file" in result.output
    assert "No such file or directory" in result.output


def test_validate_needs_a_file() -> None:
    assert runner.invoke(app, ["validate"]).exit_code == 2


def test_graph_prints_mermaid(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["graph", str(files["valid"])])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("flowchart TD\n")
    assert "    greet --> shout\n" in result.stdout


def test_graph_writes_a_file(files: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "out.mmd"
    result = runner.invoke(app, ["graph", str(files["valid"]), "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text().startswith("flowchart TD\n")
    assert f"wrote {target}" in result.output


def test_graph_markdown_gets_a_fence(files: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "out.md"
    assert runner.invoke(app, ["graph", str(files["valid"]), "-o", str(target)]).exit_code == 0
    text = target.read_text()
    assert text.startswith("```mermaid\nflowchart TD\n")
    assert text.endswith("```\n")


def test_graph_of_invalid_file(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["graph", str(files["invalid"])])
    assert result.exit_code == 2  # the code `conveyor run` exits with for an invalid file
    assert result.stdout == ""
    assert "steps[1].needs[0]: unknown step 'fetc'" in result.stderr


def test_a_misspelt_setting_is_named_with_the_setting_it_resembles(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``CONVEYOR_*`` variable that names no setting was ignored without a word (found from
    outside: ``CONVEYOR_LEASE_SECNDS=5`` left the lease at 30 s); every command warns now."""
    monkeypatch.setenv("CONVEYOR_LEASE_SECNDS", "5")
    monkeypatch.setenv("CONVEYOR_TEST_REDIS_URL", "redis://x")  # the test suite's own knob: not a setting
    result = runner.invoke(app, ["validate", str(files["valid"])])
    assert result.exit_code == 0, result.output
    assert "CONVEYOR_LEASE_SECNDS (did you mean CONVEYOR_LEASE_SECONDS?)" in result.output
    assert "CONVEYOR_TEST_REDIS_URL" not in result.output


def test_unknown_variables_are_found_case_insensitively_like_settings() -> None:
    from engine.settings import unknown_variables

    environ = {"conveyor_lease_seconds": "5", "CONVEYOR_STORE": "sqlite", "CONVEYOR_FROBNICATE": "1", "HOME": "/"}
    assert unknown_variables(environ) == ["CONVEYOR_FROBNICATE"]
