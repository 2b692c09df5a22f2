"""Several guests in one libvirt container, each on its own macvtap in bridge mode.

The first guest takes over the container's address (as in the seed); the others get
addresses from the upper half of the subnet, which docker never hands out. Bridge
mode lets macvtaps on the same parent reach each other.
"""

import pulumi

from macvtap_provider.compose import (
    LabSettings,
    guest,
    host_address,
    lab_host,
    lab_name,
    ssh_command,
)

config = pulumi.Config()
settings = LabSettings.from_config(config, lab_name(pulumi.get_project(), pulumi.get_stack()))
count = config.get_int("guests")
count = 2 if count is None else count
if not 1 <= count <= 8:
    raise ValueError(f"guests: {count} is out of range: use 1 to 8")
host = lab_host(settings)
addresses = [settings.container_ip] + [host_address(settings.subnet, 200 + i)
                                       for i in range(1, count)]
guests = [guest(settings, host, f"{settings.name}-g{i}", address)
          for i, address in enumerate(addresses)]

pulumi.export("guest_ips", [g.network.guest_ip for g in guests])
pulumi.export("guest_macs", [g.domain.guest_mac for g in guests])
pulumi.export("macvtap_devices", [g.domain.macvtap_device for g in guests])
pulumi.export("mac_matches", [g.domain.mac_matches for g in guests])
pulumi.export("container_name", host.container.name)
pulumi.export("network_name", host.network.name)
pulumi.export("ssh_commands", [ssh_command(host, g.network.guest_ip) for g in guests])
if settings.generated_password is not None:
    pulumi.export("root_password", settings.generated_password.result)
