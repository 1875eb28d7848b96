"""The command-line application, its consoles and the options every command shares."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from ..errors import StoragecarbonError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="What LLM serving with KV-cache and weight offloading costs the planet: embodied and "
                       "operational gCO2e per storage tier, measured where the hardware is present, modeled "
                       "(and labelled so) where it is not.")
devices_app = typer.Typer(no_args_is_help=True, help="The sourced device database (device_db/).")
scenario_app = typer.Typer(no_args_is_help=True, help="Scenario files.")
app.add_typer(devices_app, name="devices")
app.add_typer(scenario_app, name="scenario")

out = Console()
err = Console(stderr=True)

LOOPBACK_ENV = {"VLLM_HOST_IP": "127.0.0.1", "DO_NOT_TRACK": "1", "VLLM_NO_USAGE_STATS": "1",
                "LMCACHE_TRACK_USAGE": "false"}


def _db(db_dir: Optional[Path]):
    from ..devicedb import DeviceDB

    return DeviceDB.load(db_dir)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


DbOpt = typer.Option(None, "--db", help="device_db directory (default: $STORAGECARBON_DEVICE_DB if set, else the one shipped with storagecarbon)")
SCOPE_HELP = ("dedicated: charge every device in hardware, whole, for the run's time; shared: DRAM/SSD/HDD by "
              "occupancy (default: the scenario's carbon.scope)")


def _check_scope(scope: Optional[str]) -> None:
    if scope is not None and scope not in ("dedicated", "shared"):
        raise StoragecarbonError(f"--scope: {scope!r} is not one of dedicated, shared")


