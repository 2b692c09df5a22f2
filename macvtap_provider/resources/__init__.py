"""The lab's Pulumi dynamic resources, one module each."""
