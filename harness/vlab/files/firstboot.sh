#!/bin/sh
# Runs once as init (PID 1) while the image is built, under QEMU with direct kernel
# boot: installs GRUB into the disk's MBR from inside the image, so the boot loader
# is the image's own GRUB. The build looks for the success line in the serial log.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
if grub-install /dev/vda && update-grub && rm /root/firstboot.sh; then
    echo "vlab-firstboot: GRUB installed"
fi
sync
mount -o remount,ro /
poweroff -f
# PID 1 must not exit (kernel panic); power off through sysrq if poweroff failed
echo o > /proc/sysrq-trigger
sleep 60
