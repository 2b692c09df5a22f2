"""Several guests in one libvirt container, each on its own macvtap in bridge mode.

The first guest takes over the container's address (as in the seed); the others get
addresses from the upper half of the subnet, which docker never hands out. Bridge
mode lets macvtaps on the same parent reach each other.
"""

import pulumi

import macvtap_provider as mvt

# Every key checked (the subnet's room for that many guests too) before anything is made.
config = mvt.stack_config(extra=[mvt.GUESTS])
count: int = config.extra["guests"]
lab = mvt.Lab(mvt.lab_name(pulumi.get_project(), pulumi.get_stack()),
              root_password=config.root_password, config=config.lab)
guests = [mvt.Guest(f"{lab.lab_name}-g{i}", lab) for i in range(count)]

pulumi.export("guest_ips", [g.guest_ip for g in guests])
pulumi.export("guest_macs", [g.guest_mac for g in guests])
pulumi.export("macvtap_devices", [g.macvtap_device for g in guests])
pulumi.export("mac_matches", [g.mac_matches for g in guests])
pulumi.export("container_name", lab.container_name)
pulumi.export("network_name", lab.network_name)
pulumi.export("ssh_commands", [g.ssh_command for g in guests])
if lab.generated_password is not None:
    pulumi.export("root_password", lab.root_password)
