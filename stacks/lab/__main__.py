"""The seed's lab: network, libvirt container, customised image, macvtap domain, handover."""

import pulumi

from macvtap_provider.compose import LabSettings, guest, lab_host, lab_name, ssh_command

config = pulumi.Config()
settings = LabSettings.from_config(config, lab_name(pulumi.get_project(), pulumi.get_stack()))
host = lab_host(settings)
vm = guest(settings, host, f"{settings.name}-guest", settings.container_ip)

pulumi.export("guest_ip", vm.network.guest_ip)
pulumi.export("guest_mac", vm.domain.guest_mac)
pulumi.export("macvtap_device", vm.domain.macvtap_device)
pulumi.export("macvtap_mac", vm.domain.macvtap_mac)
pulumi.export("mac_matches", vm.domain.mac_matches)
pulumi.export("container_name", host.container.name)
pulumi.export("network_name", host.network.name)
pulumi.export("libvirt_uri", host.container.libvirt_uri)
pulumi.export("domain_name", vm.domain.name)
pulumi.export("image_path", vm.image.path)
pulumi.export("ssh_command", ssh_command(host, vm.network.guest_ip))
if settings.generated_password is not None:
    pulumi.export("root_password", settings.generated_password.result)
