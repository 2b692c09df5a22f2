"""macvtap-lab's benchmark (`make bench`, `python -m bench`): lab up vs a manual script,
no-op cost, size independence, scale, and the providers' peak RSS."""
