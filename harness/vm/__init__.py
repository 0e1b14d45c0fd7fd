"""Booting and driving the guest: vng command lines, SSH control, console classification."""
