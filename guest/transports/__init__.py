"""Transports: how requests travel between the kernel and the server.

Names are fixed strings: legacy, iovec, bufpool, bufpool-registered, zero-copy (generations
A and C), kmbuf, kmbuf-zero-copy (generation D, the posted kmbuf series).
"""
