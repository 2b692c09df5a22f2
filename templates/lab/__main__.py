"""${DESCRIPTION}"""

import pulumi

import macvtap_provider as mvt

lab = mvt.Lab.from_config()
vm = mvt.Guest(f"{lab.lab_name}-guest", lab)

pulumi.export("guest_ip", vm.guest_ip)
pulumi.export("mac_matches", vm.mac_matches)
pulumi.export("ssh_command", vm.ssh_command)
pulumi.export("root_password", lab.root_password)
