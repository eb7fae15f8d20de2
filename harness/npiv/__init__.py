"""NPIV: Fibre Channel virtual ports (vports) for guest disks, over SSH."""
