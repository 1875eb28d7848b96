"""A live progress display for runs that take more than a moment (profile, compare, plan).

``with progress(console, "profiling") as step: step("running vLLM …")`` shows a spinner, the
current step and the time the run has taken, and leaves one line per finished step that took longer
than a second (so a 35 s measured run shows where the time went). On a console that is not a
terminal (CI, a pipe) nothing is drawn; ``--json`` output is never touched (the display writes to
stderr).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from . import units as U

STEP_LOG_S = 1.0  # finished steps that took at least this long stay on screen


@contextmanager
def progress(console: Console, label: str, *, clock: Callable[[], float] = time.monotonic) -> Iterator[Callable[[str], None]]:
    if not console.is_terminal:
        yield lambda _msg: None
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(label, total=None)
        state: dict[str, Any] = {"msg": label, "t": clock()}

        def step(msg: str) -> None:
            now = clock()
            took = now - state["t"]
            if took >= STEP_LOG_S and state["msg"] != label:
                bar.console.print(f"[dim]✓ {state['msg']} ({U.seconds(took)})[/]", highlight=False)
            state.update(msg=msg, t=now)
            bar.update(task, description=f"{label}: {msg}")

        yield step
        took = clock() - state["t"]
        if took >= STEP_LOG_S and state["msg"] != label:
            bar.console.print(f"[dim]✓ {state['msg']} ({U.seconds(took)})[/]", highlight=False)
