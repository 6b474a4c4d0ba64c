"""CPU runs keep their pace when another program takes a core: OpenMP threads wait passively by default.

By default OpenMP (torch's CPU thread pool) lets a thread that finished its share of an operation spin,
burning its core, until the others finish. On a machine where another job holds one of the cores, the
spinning thread and the job take turns, and every operation waits for the slowest thread: 2 threads ran a
`vlm-sft` step 2.1x slower than 1 thread on a 2-core machine with one busy core; with
`OMP_WAIT_POLICY=PASSIVE` (waiting threads sleep) the same run took 0.41 s a step against 0.37 s on one
thread. A laptop user who opens a browser mid-run does not know to set it, so the command line sets it.

The variable is read once, when torch loads its OpenMP runtime, so `passive_openmp_default` must run before
torch is imported: `minimind-v` calls it first thing (cli.main), `./run` exports it. A value the user set
is kept (`OMP_WAIT_POLICY=ACTIVE minimind-v train ...` gives the spinning behaviour back), and a run on a
GPU device (`--device cuda...`), where the CPU threads are not the work, is left alone.
`benchmarks/cpu_neighbour.py` measures the effect.
"""
from __future__ import annotations

import os
import sys

VARIABLE = "OMP_WAIT_POLICY"


def device_of(argv) -> str | None:
    """The value of `--device` on a command line (the last one), or None."""
    found = None
    for i, a in enumerate(argv):
        if a == "--device" and i + 1 < len(argv):
            found = argv[i + 1]
        elif a.startswith("--device="):
            found = a.split("=", 1)[1]
    return found


def passive_openmp_default(argv, environ=None) -> bool:
    """Set OMP_WAIT_POLICY=PASSIVE unless the user set it, torch is already loaded (too late: the setting
    would only mislead), or the command runs on a GPU. True when it was set here."""
    environ = os.environ if environ is None else environ
    if VARIABLE in environ or "torch" in sys.modules:
        return False
    device = device_of(list(argv))
    if device is not None and not device.startswith("cpu") and device != "auto":
        return False
    environ[VARIABLE] = "PASSIVE"
    return True
