#!/bin/sh
# /init of the preflight test VM's tiny initrd: load the few drivers Debian builds as modules (listed in
# /modules, in dependency order), mount the disk and hand over to its /sbin/kmod-vm-init.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "/lib/modules/$m" || echo "kmod-vm: insmod $m failed"; done </modules
mounted=no
for i in 1 2 3 4 5 6 7 8 9 10; do
	mount -t ext4 -o rw /dev/vda /newroot && { mounted=yes; break; }
	sleep 0.3
done
[ $mounted = yes ] || { echo "kmod-vm: cannot mount /dev/vda"; ls /dev; poweroff -f; }
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/kmod-vm-init
