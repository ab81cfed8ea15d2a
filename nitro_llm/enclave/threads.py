"""How many llama.cpp threads the enclave runs when its configuration says "auto" (``threads=0``).

The rule: one thread per CPU the process may run on (``os.sched_getaffinity``: an enclave's vCPUs,
a container's CPU set), less one, and at least one. The CPU left over runs everything else that is
busy while llama.cpp decodes: the enclave's own connection threads (each opens a request, then seals
and sends every piece of its answer), and in local mode the gateway, the KMS emulator and the client.

Why not every CPU: llama.cpp's worker threads spin-wait at each of the graph's barriers (hundreds per
token), so when any one of them loses its CPU to another runnable thread, all of them wait. Measured
on this project's 2-CPU machine, two threads against one (speed ratios; ``nitro-llm bench --scenario
g``, BENCHMARKS.md): with both CPUs otherwise idle, prefill 1.83x and decode 1.41x; with about 0.8 of
a CPU taken by other tenants, 0.83x and 0.80x; with one CPU kept busy, 0.23x and 0.04x; and through
the whole local stack, whose gateway and sealing threads run beside the decoder, 0.49x and 0.17x.
Two threads win only on CPUs nothing else touches, and lose many times over otherwise, so on two
CPUs the rule picks one. Above two CPUs the same reasoning keeps one free; that part is not measured
here (no such machine), which is what the explicit override (``--threads N``) is for.

"auto" is what is measured into the PCRs, not the number it resolves to: the same EIF is run with
whatever ``--cpu-count`` an operator gives it, and its measurements must not depend on that.
"""

from __future__ import annotations

from nitro_llm.inference.llama_batch import available_cpus

AUTO = 0  # the configuration's "size it from the CPUs" value


def auto_threads(cpus: int) -> int:
    """The rule above: every CPU but one, at least one."""
    return max(1, cpus - 1)


def inference_threads(configured: int, cpus: int | None = None) -> int:
    """``configured`` when it names a count (the explicit override), else the rule's choice."""
    if configured < 0:
        raise ValueError("threads must be 0 (auto) or a positive count")
    return configured or auto_threads(available_cpus() if cpus is None else cpus)
