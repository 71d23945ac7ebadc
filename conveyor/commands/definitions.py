"""``conveyor validate`` and ``conveyor graph``: check and draw workflow definition files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from conveyor import exit_codes
from engine.compile import CompiledWorkflow, compile_workflow
from engine.errors import DefinitionInvalid, Problem
from engine.graph import to_mermaid
from engine.model import parse_definition_text


def register(app: typer.Typer) -> None:
    """Add the definition commands to the ``conveyor`` app."""
    app.command("validate")(validate)
    app.command("graph")(graph)


def validate(
    files: Annotated[list[Path], typer.Argument(help="Workflow definition files (YAML or JSON).")],
) -> None:
    """Check workflow definitions and report every problem with its path; exits 2 if one is invalid (as `run` does)."""
    console = _console()
    invalid = 0
    for path in files:
        try:
            compiled = _load(path)
        except DefinitionInvalid as exc:
            invalid += 1
            _print_problems(console, path, exc)
            continue
        roots = ", ".join(compiled.roots)
        steps = len(compiled.definition.steps)
        console.print(
            f"[green]✓[/green] {escape(str(path))}: [bold]{escape(compiled.name)}[/bold] is valid "
            f"({steps} step{'s' if steps != 1 else ''}, roots: {escape(roots)})"
        )
    if len(files) > 1:
        console.print(f"{len(files) - invalid} valid, {invalid} invalid")
    if invalid:
        raise typer.Exit(exit_codes.INVALID)


def graph(
    file: Annotated[Path, typer.Argument(help="Workflow definition file (YAML or JSON).")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file (a .md file gets a ```mermaid fence)."),
    ] = None,
) -> None:
    """Print the workflow as a Mermaid flowchart."""
    try:
        compiled = _load(file)
    except DefinitionInvalid as exc:
        _print_problems(_console(stderr=True), file, exc)
        raise typer.Exit(exit_codes.INVALID) from None
    text = to_mermaid(compiled)
    if output is None:
        typer.echo(text, nl=False)  # plain text, no Rich markup: meant to be piped
        return
    if output.suffix.lower() in {".md", ".markdown"}:
        text = f"```mermaid\n{text}```\n"
    output.write_text(text, encoding="utf-8")
    _console(stderr=True).print(f"[green]✓[/green] wrote {escape(str(output))}")


def _load(path: Path) -> CompiledWorkflow:
    """Read and compile one file; a file that cannot be read is reported like any other problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DefinitionInvalid("cannot read the file", [Problem("", reason)]) from None
    return compile_workflow(parse_definition_text(text, source=str(path)))


def _print_problems(console: Console, path: Path, exc: DefinitionInvalid) -> None:
    count = len(exc.problems)
    headline = exc.message.splitlines()[0]
    console.print(f"[red]✗[/red] {escape(str(path))}: {escape(headline)} ({count} problem{'s' if count != 1 else ''})")
    for problem in exc.problems:
        # Compiler messages may span lines (a caret under the bad token): keep them indented.
        lines = str(problem).splitlines() or [""]
        console.print("  " + escape(lines[0]))
        for line in lines[1:]:
            console.print("      " + escape(line))


def _console(*, stderr: bool = False) -> Console:
    # Created per command so output goes to the sys.stdout/stderr current at call time.
    return Console(stderr=stderr, soft_wrap=True, highlight=False)
