"""A lab whose root password is generated, and a command run in its guest over ssh."""

import pulumi

import macvtap_provider as mvt

name = mvt.lab_name("gc", pulumi.get_stack())
password = mvt.GeneratedPassword(f"{name}-password", length=24)
lab = mvt.Lab.from_config(name, root_password=password.result)
vm = mvt.Guest(f"{name}-guest", lab)


def in_guest(resource_name: str, command: str) -> mvt.GuestCommand:
    """Runs once the guest answers (its GuestNetwork proved ping and TCP 22)."""
    return mvt.GuestCommand(resource_name, mvt.GuestCommandArgs(
        network=lab.network_name, address=vm.guest_ip, root_password=password.result,
        command=command, probe_image=lab.probe_image),
        opts=pulumi.ResourceOptions(depends_on=[vm]))


kernel = in_guest(f"{name}-uname", "uname -r")
address = in_guest(f"{name}-addr", "ip -4 -o addr show dev eth0 | awk '{print $4}'")

pulumi.export("guest_ip", vm.guest_ip)
pulumi.export("guest_kernel", kernel.stdout)
pulumi.export("guest_cidr", address.stdout)
pulumi.export("network_name", lab.network_name)
pulumi.export("probe_image", lab.probe_image)
pulumi.export("root_password", password.result)
