"""Wire protocols shared by client, gateway and enclave: frames, the "kms" envelope, the request schema.

Pure data and cryptography, no I/O beyond reading frames from a socket: importable by every party.
"""
