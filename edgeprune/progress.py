"""Progress reporting as a small sink object, so library code never prints directly.

The CLI passes a rich-backed sink; tests and library users get the silent default.
"""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    def start(self, description: str, total: int) -> object: ...

    def advance(self, task: object, loss: float | None = None) -> None: ...

    def finish(self, task: object) -> None: ...

    def log(self, message: str) -> None: ...


class _NullProgress:
    def start(self, description: str, total: int) -> object:
        return None

    def advance(self, task: object, loss: float | None = None) -> None:
        return None

    def finish(self, task: object) -> None:
        return None

    def log(self, message: str) -> None:
        return None


null_progress: ProgressSink = _NullProgress()


class RichProgress:
    """Progress bars and log lines on a rich console (stderr, so stdout stays parseable)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"), TimeElapsedColumn(),
            console=self.console, transient=True,
        )

    def __enter__(self) -> "RichProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, description: str, total: int) -> object:
        return self._progress.add_task(description, total=total, loss="")

    def advance(self, task: object, loss: float | None = None) -> None:
        self._progress.update(task, advance=1, loss="" if loss is None else f"loss {loss:.3f}")

    def finish(self, task: object) -> None:
        self._progress.remove_task(task)

    def log(self, message: str) -> None:
        self._progress.console.print(message)
