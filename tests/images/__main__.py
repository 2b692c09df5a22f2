"""`python -m tests.images [NAME...]`: build the named fixtures (default: all), print where."""

from __future__ import annotations

import argparse
import logging
import sys

from macvtap_provider.errors import ImageBuildError
from tests.images import ALL_NAMES, build_record, ensure_fixture


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.images", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"fixtures to build (default: all of {', '.join(ALL_NAMES)})")
    parser.add_argument("--force", action="store_true", help="rebuild even when current")
    parser.add_argument("-v", "--verbose", action="store_true", help="log build output")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(ALL_NAMES))
    if unknown:
        parser.error(f"unknown fixture {', '.join(unknown)}; choose from {', '.join(ALL_NAMES)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("docker", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in args.names or ALL_NAMES:
        try:
            path = ensure_fixture(name, force=args.force)
        except ImageBuildError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        seconds = build_record(name).get("seconds", {}) if name != "default" else {}
        print(f"{name}\t{path}\t{seconds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
