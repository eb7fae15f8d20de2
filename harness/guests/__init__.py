"""Test guests: a small PV guest the harness builds itself (image.py, initramfs.py),
and the guests made from it on a host (guest.py): their xl config and addresses
(config.py), dom0 made ready for them (dom0.py), SSH into them through dom0 (shell.py).
"""
