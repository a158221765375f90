"""Open the report in a browser, or print its path where there is none.

    python tools/open_report.py                        # reports/index.html (`make report`)
    python tools/open_report.py --page .quick/reports/index.html   # the quick world's (`make quick`)

Standard library only, so it runs with any Python 3.
"""

from __future__ import annotations

import argparse
import os
import sys
import webbrowser
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--page", type=Path, default=Path("reports/index.html"), help="the report page to open")
    page = ap.parse_args().page.resolve()
    if not page.is_file():
        print(f"error: {page}: not found; run `make run` (or `dvc repro`) first", file=sys.stderr)
        return 2
    # On Linux without a display, webbrowser would start a text browser in the terminal.
    headless = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    try:
        opened = not headless and webbrowser.open(page.as_uri())
    except webbrowser.Error:
        opened = False
    print(f"opened {page}" if opened else f"no browser found; open this file: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
