#!/bin/sh
# /init of a kmod boot test, rendered from templates/boot/init.sh.j2 (edit that, not this).
# Every step prints one line, "KMODBOOT step=NAME status=ok|fail|... key=value...", through
# /dev/kmsg so that it reaches the console in order with the kernel's own messages (a WARNING is
# then attributed to the step that caused it). The host reads the console; this script decides nothing.
# Applet links come in the archive; older busybox builds whose list could not be read link them here.
[ -e /bin/mount ] || /bin/busybox --install -s /bin
export PATH=/bin
# Every fork costs tens of milliseconds under TCG: one `mount -a` (etc/fstab) for all file systems, and
# shell builtins (read, echo) instead of cat and uname below.
mount -a 2>/dev/null
mounted=$?
r() { echo "<2>KMODBOOT $*" >/dev/kmsg 2>/dev/null || echo "KMODBOOT $*"; }
finish() {
	r step=taint status=ok value=$(cat /proc/sys/kernel/tainted)
	r step=done status=ok
	poweroff -f
}
r step=init status=ok

if [ $mounted = 0 ] && [ -d /sys/kernel/debug/kprobes ]; then
	read -r release </proc/sys/kernel/osrelease
	# cat, not read: sysctl files answer a read at an offset with EOF, and read takes one byte at a time
	r step=mount status=ok release=$release taint=$(cat /proc/sys/kernel/tainted)
else
	r step=mount status=fail
	finish
fi
# Nothing may interleave with the dumps: kernel messages off the console. uuencode -m is base64 in
# every busybox we pin (the base64 applet is missing from bullseye's).
echo 1 >/proc/sys/kernel/printk
echo "KMODBOOT-BEGIN kallsyms"
gzip -c /proc/kallsyms | uuencode -m kallsyms
echo "KMODBOOT-END kallsyms"
echo "KMODBOOT-BEGIN blacklist"
gzip -c /sys/kernel/debug/kprobes/blacklist | uuencode -m blacklist
echo "KMODBOOT-END blacklist"
finish
