#!/usr/bin/env python3
"""test_symbols.py — the gateway and the balancer contain no engine and no
CUDA code (issue 12): they link the A1111 request model (a1111/) and never
kernels/. Runs `nm` on both binaries and fails on any symbol of the engine
(its public API engine_*, its ops_*/OPS_* tables, sampler_*, schedule_*,
scene_* and prompt_* internals) or of CUDA (cuda*, __cuda*, nvcc's device
stubs). The same patterns must match sdgate-backend, which has the engine:
otherwise the check would pass vacuously.

SDGATE_SYMBOLS_BIN may name another build directory (e.g. one of old main,
to see this test fail there)."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdtest as t  # noqa: E402

BIN = os.environ.get("SDGATE_SYMBOLS_BIN") or t.BIN_DIR

# Engine-only names, picked from `nm sdgate-backend` over kernels/'s objects.
ENGINE = re.compile(r"^(engine_|ops_|OPS_|sampler_(run|denoise|ancestral_step|default_eta)$|"
                    r"schedule_(sigma|sigmas|default|t_to_sigma)|scene_(render|encode)$|"
                    r"prompt_(parse|scene|shape|colour|hash|is_stopword)$|__odr_asan\.OPS_)")
CUDA = re.compile(r"^(_?cuda|__cuda|_Z.*device_stub)|libcudart", re.IGNORECASE)


def symbols(path):
    rc, out, err = t.run_tool(["nm", path], timeout=120)
    names = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            names.append(parts[-1])
    return rc, names, err


def offenders(names):
    return sorted({n for n in names if ENGINE.search(n) or CUDA.search(n)})


def main():
    progs = {"sdgate-gateway": os.path.join(BIN, "gateway", "sdgate-gateway"),
             "sdgate-balancer": os.path.join(BIN, "balancer", "sdgate-balancer"),
             "sdgate-backend": os.path.join(BIN, "backend", "sdgate-backend")}
    found = {}
    for name, path in progs.items():
        if not os.path.exists(path):
            t.check("%s is built at %s" % (name, path), name != "sdgate-backend" or "SDGATE_SYMBOLS_BIN" in os.environ,
                    path)
            continue
        rc, names, err = symbols(path)
        t.check("nm %s runs and lists symbols" % name, rc == 0 and len(names) > 0, err[-300:])
        found[name] = offenders(names)
        engine = [n for n in found[name] if ENGINE.search(n)]
        cuda = [n for n in found[name] if CUDA.search(n)]
        print("# %s: %d symbols, %d engine, %d CUDA" % (name, len(names), len(engine), len(cuda)))
    if "sdgate-backend" in found:
        t.check("the patterns find the engine in sdgate-backend (the check is not vacuous)",
                any(n.startswith("engine_generate") for n in found["sdgate-backend"]), found["sdgate-backend"][:10])
    for name in ("sdgate-gateway", "sdgate-balancer"):
        if name in found:
            t.check("%s has no engine or CUDA symbol" % name, not found[name],
                    "%d, e.g. %s" % (len(found[name]), found[name][:12]))


if __name__ == "__main__":
    t.run(main)
