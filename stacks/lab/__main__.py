"""The seed's lab: network, libvirt container, customised image, macvtap domain, handover."""

import pulumi

import macvtap_provider as mvt

lab = mvt.Lab.from_config()
vm = mvt.Guest(f"{lab.lab_name}-guest", lab)

pulumi.export("guest_ip", vm.guest_ip)
pulumi.export("guest_mac", vm.guest_mac)
pulumi.export("macvtap_device", vm.macvtap_device)
pulumi.export("macvtap_mac", vm.macvtap_mac)
pulumi.export("mac_matches", vm.mac_matches)
pulumi.export("container_name", lab.container_name)
pulumi.export("network_name", lab.network_name)
pulumi.export("libvirt_uri", lab.libvirt_uri)
pulumi.export("domain_name", vm.domain_name)
pulumi.export("image_path", vm.image_path)
pulumi.export("ssh_command", vm.ssh_command)
if lab.generated_password is not None:
    pulumi.export("root_password", lab.root_password)
