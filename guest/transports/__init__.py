"""Transports: how requests travel between the kernel and the server.

Names are fixed strings: legacy, iovec, bufpool, bufpool-registered, zero-copy (generations
A and C), bufring (generation B, the posted bufring series' 10/14), kmbuf, kmbuf-zero-copy
(generation D, the posted kmbuf series).
"""
