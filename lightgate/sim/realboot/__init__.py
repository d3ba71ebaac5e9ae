"""Real measured boots: an x86 guest under QEMU (q35, TCG) with swtpm as its TPM.

OVMF -> shim -> grub -> a signed Debian kernel -> a tiny busybox initramfs that copies
the UEFI event log and every PCR bank out over the second serial port, then powers off.

- `packages`: download (never install) the Debian 12 packages that hold the boot binaries.
- `initramfs`: a byte-identical newc cpio, built in pure Python.
- `esp`: the EFI System Partition image (mtools, no loop mounts).
- `qemu`: run swtpm + qemu-system-x86_64 for one boot, Secure Boot on or off.
- `record`: parse the guest's evidence, check replay against every bank, write a recording.
"""
