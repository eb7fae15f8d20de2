"""Test guests: a small PV guest the harness builds itself (image.py, initramfs.py),
and the guests made from it on a host (guest.py), reached by SSH through dom0 (shell.py).
"""
