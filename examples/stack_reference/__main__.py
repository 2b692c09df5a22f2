"""Read another stack's lab outputs and use them: run a command in that lab's guest."""

import pulumi

import macvtap_provider as mvt

lab = pulumi.StackReference(pulumi.Config().require("labStack"))
guest_ip = lab.require_output("guest_ip")
uptime = mvt.GuestCommand("lab-uptime", mvt.GuestCommandArgs(
    network=lab.require_output("network_name"), address=guest_ip,
    root_password=lab.require_output("root_password"), command="cat /proc/uptime",
    probe_image=lab.require_output("probe_image")))

pulumi.export("lab_guest_ip", guest_ip)
pulumi.export("lab_guest_uptime_s", uptime.stdout.apply(lambda s: float(s.split()[0])))
