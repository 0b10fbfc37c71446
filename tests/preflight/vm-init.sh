#!/bin/sh
# PID 1 of the preflight test VM (after the tiny initrd's switch_root): mount what a Debian host has
# mounted, bring up QEMU's user network, and become the SSH server. No systemd: SSH answers seconds
# after boot under TCG. Written into the image as /sbin/kmod-vm-init by tests/preflight/vm.py.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
# what udev would link: bash's <(...) (dkms uses it) needs /dev/fd
ln -sfn /proc/self/fd /dev/fd
ln -sfn /proc/self/fd/0 /dev/stdin
ln -sfn /proc/self/fd/1 /dev/stdout
ln -sfn /proc/self/fd/2 /dev/stderr
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug
mount -t securityfs securityfs /sys/kernel/security
mount -o remount,rw /
hostname kmod-vm
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.2.2
echo "kmod-vm: $(uname -r) up, starting dropbear" >/dev/console
# dropbear reaps every child (waitpid -1), which is what PID 1 must do. -s: keys only, no passwords.
exec dropbear -F -E -s -p 22 -r /etc/dropbear/dropbear_ed25519_host_key
