"""A lab whose root password is generated, and a command run in its guest over ssh."""

import pulumi

from macvtap_provider.compose import LabSettings, guest, lab_host, lab_name
from macvtap_provider.resources.generated_password import GeneratedPassword
from macvtap_provider.resources.guest_command import GuestCommand, GuestCommandArgs

name = lab_name("gc", pulumi.get_stack())
password = GeneratedPassword(f"{name}-password", length=24)
settings = LabSettings.from_config(pulumi.Config(), name, root_password=password.result)
host = lab_host(settings)
vm = guest(settings, host, f"{name}-guest", settings.container_ip)

# Runs once the guest answers (GuestNetwork proved ping and TCP 22).
kernel = GuestCommand(f"{name}-uname", GuestCommandArgs(
    network=host.network.name, address=vm.network.guest_ip, root_password=password.result,
    command="uname -r", probe_image=host.container.image_ref),
    opts=pulumi.ResourceOptions(depends_on=[vm.network]))
address = GuestCommand(f"{name}-addr", GuestCommandArgs(
    network=host.network.name, address=vm.network.guest_ip, root_password=password.result,
    command="ip -4 -o addr show dev eth0 | awk '{print $4}'", probe_image=host.container.image_ref),
    opts=pulumi.ResourceOptions(depends_on=[vm.network]))

pulumi.export("guest_ip", vm.network.guest_ip)
pulumi.export("guest_kernel", kernel.stdout)
pulumi.export("guest_cidr", address.stdout)
pulumi.export("network_name", host.network.name)
pulumi.export("probe_image", host.container.image_ref)
pulumi.export("root_password", password.result)
