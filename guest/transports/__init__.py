"""Transports: how requests travel between the kernel and the server.

Names are fixed strings: legacy, iovec, bufpool, bufpool-registered, zero-copy.
"""
