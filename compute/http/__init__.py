"""compute_ctl's HTTP API: the external (JWT) and internal (loopback) aiohttp servers.

Routes are thin adapters over ``ComputeNode``: validate, hand off, wait, translate errors.
"""
