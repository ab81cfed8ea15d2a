"""Deployment onto real Nitro Enclaves: the parts that run on an operator's machine or the parent
instance (EIF build, run, host configuration) and the enclave image's init.

Everything here that touches the outside world (docker, nitro-cli, systemd) is built as a pure
function returning an argv list or a file's text, so it can be reviewed and unit-tested on a machine
without Nitro hardware; ``runner`` is the one thin seam that executes them.
"""
