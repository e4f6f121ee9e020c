"""Cryptography: Paillier, packing, secure aggregation and PSI. Imports nothing from the project."""
