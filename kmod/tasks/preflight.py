"""`invoke preflight`: will each module load and work on these hosts? Asked over SSH, read-only unless
--install."""
from invoke.exceptions import Exit

from .args import task
from .common import COMMON_HELP, cli_errors, count, output_folder, seconds


@task(help={"host": "hosts: [user@]host[:port] or an ssh_config alias, comma-separated",
           "hosts": "a file of hosts, one [user@]host[:port] a line (# comments), or an ssh_config file "
                    "(e.g. ~/.ssh/config: all its concrete Host names)",
           "module": COMMON_HELP["module"], "spec": COMMON_HELP["spec"],
           "format": "text (default), json or junit",
           "fail_on": "exit 2 when a verdict reaches this: fail (default) or warn",
           "jobs": "hosts at once (default: 16)",
           "timeout": "seconds per host for reading it (default: 120)",
           "ssh_config": "the ssh_config that resolves host names (default: ~/.ssh/config)",
           "identity": "a private key file to log in with (like ssh -i); keys from ssh-agent and "
                       "~/.ssh are used too; never a password",
           "strict_host_keys": "refuse hosts whose key is not in known_hosts (default: accept and note)",
           "install": "also install the DKMS package on each host that passes, load the module, run the "
                      "trigger, read the hits and the kernel log, unload and remove it",
           "keep": "with --install: leave the package installed",
           "install_timeout": "with --install: seconds per host (default: 1800; dkms builds there)",
           "auto_pin": "lock, build, lint and boot-test exactly the Debian kernel a host runs when it is "
                       "of a pinned suite but not pinned, then preflight again"})
@cli_errors
def preflight(c, host="", hosts="", module="", spec="", format="text", fail_on="fail", jobs="", timeout="",
              ssh_config="", identity="", strict_host_keys=False, install=False, keep=False,
              install_timeout="", auto_pin=False):
    """Ask the hosts over SSH whether each module will load and work there (exit 0/2/1, like lint)."""
    import sys
    from pathlib import Path

    from .. import preflight as pf
    from .. import spec as specmod
    from ..errors import UserError
    from ..preflight import hosts as hostsmod
    from ..preflight import report, ssh
    if format not in report.FORMATS:
        raise UserError(f"unknown format {format!r}", f"choose one of: {', '.join(report.FORMATS)}")
    if fail_on not in report.FAIL_ON:
        raise UserError(f"unknown --fail-on {fail_on!r}", f"choose one of: {', '.join(report.FAIL_ON)}")
    jobs = count(jobs, "--jobs") or 0  # 0: the default
    timeout = seconds(timeout, "--timeout", ssh.Options.timeout)
    install_timeout = seconds(install_timeout, "--install-timeout", pf.Options.install_timeout)
    if identity and not Path(identity).expanduser().is_file():
        raise UserError(f"--identity {identity}: no such file", "give the private key file, as for ssh -i")
    if keep and not install:
        raise UserError("--keep goes with --install")
    targets, from_config = hostsmod.select(host, hosts)
    config = hostsmod.ssh_config_path(ssh_config, from_config)
    project = specmod.load(specmod.find(spec or None))
    selected = project.select(module or None)
    output_folder(project)
    opts = pf.Options(ssh=ssh.Options(ssh_config=config, identity=identity, strict_host_keys=strict_host_keys,
                                      timeout=timeout),
                      jobs=jobs, fail_on=fail_on, install=install, keep=keep, auto_pin=auto_pin,
                      install_timeout=install_timeout)
    results = pf.run(project, targets, selected, opts)
    sys.stdout.write(report.format_report(results, format, fail_on))
    if format != "text":
        print(report.summary(results), file=sys.stderr)
    code = report.exit_code(results, fail_on)
    if code:
        raise Exit(code=code)
