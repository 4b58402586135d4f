"""``python -m streams.faust_path [--data-dir DIR]``: run the experiment's Faust worker.

Settings as for ``ioc worker`` (files and ``IOC_*`` environment variables).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import faust

from ioc._runtime import service_start
from ioc.config import default_state_dir, load_settings

from ._app import create_faust_app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="RocksDB and Faust data (default: <state dir>/faust/<ns>-faustpath)")
    ap.add_argument("--loglevel", default="warning")
    a = ap.parse_args()
    s = load_settings()
    data_dir = a.data_dir or default_state_dir() / "faust" / f"{s.namespace}-faustpath"
    app = create_faust_app(s, data_dir=data_dir)
    worker = faust.Worker(app, loglevel=a.loglevel, quiet=True)
    worker.spinner = None
    service_start()
    sys.argv = sys.argv[:1]  # Faust's worker parses argv again
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
