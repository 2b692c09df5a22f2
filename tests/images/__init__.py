"""Base-image fixtures: bootable guests shaped like the vendor images users bring.

Test fixtures and benchmark inputs, not product: built from Debian packages with the
product's image machinery (macvtap_provider.images) and cached by recipe hash beside the
default guest. `python -m tests.images [NAME...]` builds them ahead of a test run.
"""

from tests.images.build import build_record, ensure_fixture, fixture_path
from tests.images.recipes import ALL_NAMES, FIXTURES, Fixture

__all__ = ["ALL_NAMES", "FIXTURES", "Fixture", "build_record", "ensure_fixture", "fixture_path"]
