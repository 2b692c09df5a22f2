"""macvtap-lab: Pulumi dynamic providers for a macvtap virtualisation lab."""

__version__ = "0.1.0"
