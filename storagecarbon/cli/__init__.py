"""Command line: ``storagecarbon profile | record | report | compare | plan | calibrate | devices | env | export | query``.

Every user error is a one-line message on stderr and a non-zero exit; no tracebacks. The commands live in the
modules of this package (``run``, ``devices``, ``scenario``) and, for compare/plan, calibrate and the fleet, in
their subsystems' own ``cli`` modules, registered on the one :data:`app`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from ..errors import StoragecarbonError
from . import devices, run, scenario  # noqa: F401 - importing registers their commands
from .app import LOOPBACK_ENV, _print_json, app, err, out

# ---------------------------------------------------------------------------------------- env
@app.command()
def env(as_json: bool = typer.Option(False, "--json")) -> None:
    """Which sensors and engines are available on this machine, and why not."""
    from ..environment import probe_all

    info = probe_all()
    if as_json:
        _print_json(info)
        return
    from rich.table import Table

    t = Table(title="sensors and engines on this machine")
    t.add_column("name")
    t.add_column("available")
    t.add_column("why / detail", overflow="fold")
    for section in ("sensors", "engines"):
        for name, st in info[section].items():
            t.add_row(f"{section[:-1]} {name}", "[green]yes[/]" if st["available"] else "[red]no[/]", st["reason"])
    out.print(t)


def _register_optional() -> None:
    """Commands implemented in their own modules (compare, plan, calibrate)."""
    for mod in ("storagecarbon.plan.cli", "storagecarbon.calibrate", "storagecarbon.fleet.cli"):
        try:
            m = __import__(mod, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name == mod:
                continue
            raise
        m.register(app)


_register_optional()


def main(argv: list[str] | None = None) -> int:
    for k, v in LOOPBACK_ENV.items():
        os.environ.setdefault(k, v)
    try:
        rc = app(args=argv, prog_name="storagecarbon", standalone_mode=False)
        if isinstance(rc, int):
            return rc
    except StoragecarbonError as exc:
        err.print(f"[red]storagecarbon: error:[/] {exc}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        return 130
    except SystemExit as exc:
        return int(exc.code or 0)
    except _CLICK_ERRORS as exc:
        exc.show()   # a usage error: one line and the command's usage, exit 2
        return int(getattr(exc, "exit_code", 2))
    return 0


def _click_errors() -> tuple[Any, ...]:
    """Click's exception base, and the copy of Click that Typer >= 0.24 vendors (``typer._click``): a usage
    error from either is a clean message, not a traceback."""
    import click

    out: list[Any] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as Vendored  # type: ignore[import-not-found]

        out.append(Vendored)
    except ImportError:
        pass
    return tuple(out)


_CLICK_ERRORS = _click_errors()


if __name__ == "__main__":
    sys.exit(main())
