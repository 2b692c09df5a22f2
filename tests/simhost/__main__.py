"""`python -m tests.simhost build`: build the simulated-host image (make setup does)."""

from __future__ import annotations

import logging
import sys

from tests.simhost import ensure_image

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if sys.argv[1:] != ["build"]:
        sys.exit("usage: python -m tests.simhost build")
    print(f"simhost_image: {ensure_image()}")
