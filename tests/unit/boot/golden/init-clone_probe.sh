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
# From here on every kernel message reaches the console, warnings included.
echo 8 >/proc/sys/kernel/printk

# The kernel's own kprobes (PowerPC registers one on its kretprobe trampoline at boot) are not the
# module's: remember the addresses, types and places the list holds before insmod, without the flags
# ([OPTIMIZED] may come later), with shell builtins only (no fork).
before="|"
if [ -r /sys/kernel/debug/kprobes/list ]; then
	while IFS= read -r line; do before="$before${line%%\[*}|"; done </sys/kernel/debug/kprobes/list
fi

# Dependencies first (the build's load order).
for ko in /kmod/clone_probe.ko ; do
	insmod "$ko" || { rc=$?; r step=insmod status=fail rc=$rc name=${ko##*/}; finish; }
done
r step=insmod status=ok

# Expected: kernel_clone+0x0
if [ -r /sys/kernel/debug/kprobes/list ]; then
	: >/tmp/kprobes
	while IFS= read -r line; do
		case $before in *"|${line%%\[*}|"*) continue ;; esac
		echo "$line" >>/tmp/kprobes
		r step=kprobes status=entry "entry=$line"
	done </sys/kernel/debug/kprobes/list
	r step=kprobes status=ok
else
	r step=kprobes status=fail reason=no-kprobes-list
fi

r step=trigger status=start
# In a subshell: the trigger cannot end /init (exit) or change its variables.
(eval /bin/true) </dev/null
r step=trigger status=ok rc=$?

if read -r hits </sys/module/clone_probe/parameters/hits; then
	r step=hits status=ok value=$hits
else
	r step=hits status=missing
fi

rc=0
for name in clone_probe ; do
	rmmod "$name" || { rc=$?; r step=rmmod status=fail rc=$rc name=$name; }
done
[ $rc = 0 ] && r step=rmmod status=ok
finish
