#!/usr/bin/env python3
"""Where detour's per-request time and per-worker memory go: A/B runs and perf profiles.

bench/run.py answers "how much"; this answers "why". It reuses run.py's targets (same
upstream, config, pinning, request bodies, oha) and has three modes:

  ab       Interleaved A/B at one fixed rate: every variant, every round, rotated order.
           Reports per variant the median p50/p99 added over direct nginx and the CPU time
           per request. Variants (--variants, comma-separated):
             direct | envoy | envoy+detour | serve
             envoy+detour@LEVEL         Envoy at log level LEVEL (-l), e.g. warning: prices
                                        the per-request `detour-event` line on Envoy's side
             envoy+detour#FILE / serve#FILE
                                        the same with another wasm build (e.g. before/after)
             VARIANT%budgets            that variant with the config with budgets (see --budgets)
             floor:noop | floor:hold_body
                                        Envoy with a stand-in filter from bench/guests/
                                        (wat2wasm) and a plain route: the cost of any wasm
                                        filter, and of one that holds the request body
  perf     `perf record -g` (cpu-clock) on one variant's pinned process while oha drives it
           at the fixed rate; writes perf.data and a text report (--perf-target).
  memory   Envoy --concurrency 1/2/4 without a filter, with the empty stand-in filter
           (bench/guests/noop.wat) and with detour, and detour serve --workers 1/2/4: VmRSS
           after traffic on every worker. The slope over workers is the per-worker cost; the
           difference of the Envoy slopes is the filter's.

Usage:
  .venv/bin/python bench/profile.py ab --variants envoy,envoy+detour,envoy+detour@warning
  .venv/bin/python bench/profile.py perf --perf-target envoy+detour --seconds 15
  .venv/bin/python bench/profile.py memory
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: targets, upstream, load generator)

ROOT = bench.ROOT


def budget_config(upstream: int) -> str:
    """The bench config with prices, rpm/tpm and budgets in three scopes: every request then
    reserves and settles in each scope and takes and reconciles its rate window, as a
    production config with budgets does (bench/run.py's config has none)."""
    text = bench.router_config(upstream)
    text = text.replace("api_key: sk-bench}", "api_key: sk-bench, input_cost_per_token: 0.000001, "
                        "output_cost_per_token: 0.000002, rpm: 100000000, tpm: 100000000000}")
    return text + """detour:
  budgets:
    total: 1000000
    groups: {bench: 1000000, bench-sse: 1000000}
    models: {bench-model: 1000000}
"""


class FloorEnvoy(bench.Envoy):
    """Envoy with a stand-in wasm filter (bench/guests/*.wat) and the plain route of bare
    Envoy: what Envoy's wasm machinery costs before a filter decides anything."""

    def bootstrap(self) -> Path:
        out = super().bootstrap()
        import yaml  # PyYAML is in the repo's .venv
        doc = yaml.safe_load(out.read_text())
        cluster = doc["static_resources"]["clusters"][0]["name"]
        hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        for vh in hcm["route_config"]["virtual_hosts"]:
            for r in vh["routes"]:
                r["route"].pop("cluster_header", None)
                r["route"]["cluster"] = cluster
        out.write_text(yaml.safe_dump(doc, sort_keys=False))
        return out

    def path(self, kind: str) -> str:
        return {"json": "/json/v1/chat/completions", "sse": "/sse/v1/chat/completions",
                "fallback": "/json/v1/chat/completions"}[kind]

    def supports(self, kind: str) -> bool:
        return kind != "fallback"


def guest(name: str, workdir: Path) -> Path:
    """bench/guests/NAME.wat compiled with wat2wasm (Debian's wabt)."""
    if shutil.which("wat2wasm") is None:
        raise SystemExit("profile: floor variants need wat2wasm: apt-get install -y wabt")
    src = Path(__file__).resolve().parent / "guests" / f"{name}.wat"
    out = workdir / f"{name}.wasm"
    subprocess.run(["wat2wasm", str(src), "-o", str(out)], check=True, timeout=60)
    return out


def make_variant(spec: str, workdir: Path, cores: dict, config: Path, detour: Path, wasm: Path, upstream,
                 workers: int = 1):
    """A started target for a variant spec (see the module doc)."""
    if spec.endswith("%budgets"):  # this variant reads the config with budgets
        config = config.with_name("config-budgets.yaml")
    base, _, alt = spec.removesuffix("%budgets").partition("#")
    base, _, level = base.partition("@")
    wasm_file = Path(alt) if alt else wasm
    extra = ["-l", level] if level else []
    if alt:  # a short name: the file's stem
        spec = spec.split("#", 1)[0] + "#" + wasm_file.stem + ("%budgets" if spec.endswith("%budgets") else "")
    if base == "direct":
        return upstream
    if base == "envoy":
        return bench.BareEnvoy(workdir, cores, config, detour, wasm_file, workers, extra, name=spec).start()
    if base == "envoy+detour":
        return bench.Envoy(workdir, cores, config, detour, wasm_file, workers, extra, name=spec).start()
    if base.startswith("floor:"):  # floor:noop, floor:hold_body (bench/guests/)
        return FloorEnvoy(workdir, cores, config, detour, guest(base.split(":", 1)[1], workdir), workers, extra,
                          name=spec).start()
    if base == "serve":
        return bench.Serve(workdir, cores, config, detour, wasm_file, workers, name=spec).start()
    raise SystemExit(f"profile: unknown variant {spec!r}")


def setup(args):
    ncpu = __import__("os").cpu_count() or 1
    cores = {"proxy": "1", "loadgen": "0", "upstream": "0"} if ncpu >= 2 else {}
    oha = shutil.which("oha") or str(Path.home() / ".cargo" / "bin" / "oha")
    loadgen = bench.Oha(oha, cores)
    detour = ROOT / "target" / "release" / "detour"
    wasm = ROOT / "target" / "detour.wasm"
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="profile-", dir=out_dir))
    return cores, loadgen, detour, wasm, out_dir, workdir


def body_for(workdir: Path, t, kind: str) -> Path:
    f = workdir / f"body-{t.model(kind)}.json"
    f.write_bytes(bench.request_body(t.model(kind), kind == "sse"))
    return f


def cmd_ab(args) -> int:
    cores, loadgen, detour, wasm, out_dir, workdir = setup(args)
    upstream = bench.Nginx(workdir, cores)
    started = []
    results: dict[str, list[dict]] = {}
    load_start = bench.loadavg()
    try:
        upstream.start()
        config = workdir / "config.yaml"
        config.write_text(budget_config(upstream.port) if args.budgets else bench.router_config(upstream.port))
        (workdir / "config-budgets.yaml").write_text(budget_config(upstream.port))
        specs = [v.strip() for v in args.variants.split(",") if v.strip()]
        if "direct" not in specs:
            specs.insert(0, "direct")
        for spec in specs:
            t = make_variant(spec, workdir, cores, config, detour, wasm, upstream)
            started.append(t)
            print(f"profile: {spec} ready on {t.port} (pid {t.pid})", flush=True)
        for t in started:
            loadgen.run(f"http://127.0.0.1:{t.port}{t.path(args.kind)}", body_for(workdir, t, args.kind), 1.0, 200, 8)
        for rnd in range(args.rounds):
            order = started[rnd % len(started):] + started[:rnd % len(started)]
            for t in order:
                before = bench.cpu_seconds(t.pid)
                r = loadgen.run(f"http://127.0.0.1:{t.port}{t.path(args.kind)}", body_for(workdir, t, args.kind),
                                args.duration, args.rate, 32 if args.rate > 200 else 16)
                r["cpu_s"] = bench.cpu_seconds(t.pid) - before
                results.setdefault(t.name, []).append(r)
                print(f"profile: round {rnd + 1}/{args.rounds} {t.name:40s} p50={bench.fmt_ms(r['p50'])} "
                      f"p99={bench.fmt_ms(r['p99'])} cpu={1e6 * r['cpu_s'] / max(1, r['ok']):.0f}us/req "
                      f"ok={r['ok']}/{r['total']}", flush=True)
                time.sleep(0.3)
    finally:
        for t in reversed(started):
            if t is not upstream:
                t.stop()
        upstream.stop()
    direct = results.get("direct", [])
    lines = [f"A/B: {args.kind} at {args.rate} RPS{' (config with budgets)' if args.budgets else ''}, {args.rounds} rounds × {args.duration} s, interleaved; "
             f"load average at start {load_start}, at end {bench.loadavg()}", "",
             "| variant | p50 ms | added p50 ms (median of rounds) | added p99 ms | CPU µs/req (all rounds) | "
             "CPU µs/req per round |", "|---|---|---|---|---|---|"]
    summary = {}
    for name, runs in results.items():
        added50 = statistics.median(r["p50"] - d["p50"] for r, d in zip(runs, direct))
        added99 = statistics.median(r["p99"] - d["p99"] for r, d in zip(runs, direct))
        cpu = 1e6 * sum(r["cpu_s"] for r in runs) / max(1, sum(r["ok"] for r in runs))
        per_round = [1e6 * r["cpu_s"] / max(1, r["ok"]) for r in runs]
        summary[name] = {"added_p50_ms": added50 * 1000, "added_p99_ms": added99 * 1000, "cpu_us_per_req": cpu,
                         "cpu_per_round": per_round, "p50_ms": statistics.median(r["p50"] for r in runs) * 1000}
        lines.append(f"| {name} | {summary[name]['p50_ms']:.3f} | {added50 * 1000:.3f} | {added99 * 1000:.3f} | "
                     f"{cpu:.0f} | {' '.join(f'{c:.0f}' for c in per_round)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (out_dir / f"ab-{stamp}.md").write_text(text)
    (out_dir / f"ab-{stamp}.json").write_text(json.dumps({"summary": summary, "raw": results}, indent=1))
    if args.keep:
        print(f"profile: kept {workdir} (logs, bootstraps)")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def cmd_perf(args) -> int:
    cores, loadgen, detour, wasm, out_dir, workdir = setup(args)
    upstream = bench.Nginx(workdir, cores)
    target = None
    perf = None
    data = out_dir / f"perf-{args.perf_target.replace('+', '_').replace('#', '_').replace('/', '_')}.data"
    try:
        upstream.start()
        config = workdir / "config.yaml"
        config.write_text(bench.router_config(upstream.port))
        target = make_variant(args.perf_target, workdir, cores, config, detour, wasm, upstream)
        url = f"http://127.0.0.1:{target.port}{target.path(args.kind)}"
        body = body_for(workdir, target, args.kind)
        loadgen.run(url, body, 1.0, 200, 8)
        # perf on the loadgen core's side: it only samples the target's threads.
        perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", str(args.freq), "-g", "-o", str(data),
                                 "-p", str(target.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        before = bench.cpu_seconds(target.pid)
        r = loadgen.run(url, body, args.seconds, args.rate, 32 if args.rate > 200 else 16)
        cpu = bench.cpu_seconds(target.pid) - before
        print(f"profile: perf run p50={bench.fmt_ms(r['p50'])} cpu={1e6 * cpu / max(1, r['ok']):.0f}us/req "
              f"ok={r['ok']}/{r['total']}", flush=True)
    finally:
        if perf is not None and perf.poll() is None:
            perf.send_signal(2)  # SIGINT: perf writes its data and exits
            try:
                perf.wait(timeout=60)
            except subprocess.TimeoutExpired:
                perf.kill()
        if target is not None and target is not upstream:
            target.stop()
        upstream.stop()
    report = out_dir / (data.stem + ".txt")
    with open(report, "w") as f:
        subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children", "--percent-limit", "0.5",
                        "--sort", "dso,symbol", "-g", "none"], stdout=f, stderr=subprocess.DEVNULL, timeout=300)
    print(f"profile: wrote {data} and {report}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def cmd_memory(args) -> int:
    cores, loadgen, detour, wasm, out_dir, workdir = setup(args)
    if args.wasm:
        wasm = Path(args.wasm)
    upstream = bench.Nginx(workdir, cores)
    rows = []
    try:
        upstream.start()
        config = workdir / "config.yaml"
        config.write_text(bench.router_config(upstream.port))
        for rnd in range(args.rounds):
            for spec in ("envoy", "floor:noop", "envoy+detour", "serve"):
                for workers in (1, 2, 4):
                    name = f"{spec}-w{workers}-r{rnd}"
                    if spec == "envoy":
                        t = bench.BareEnvoy(workdir, cores, config, detour, wasm, workers, name=name).start()
                    elif spec == "floor:noop":  # V8 and Envoy's wasm extension with a 425-byte module
                        t = FloorEnvoy(workdir, cores, config, detour, guest("noop", workdir), workers,
                                       name=name).start()
                    elif spec == "envoy+detour":
                        t = bench.Envoy(workdir, cores, config, detour, wasm, workers, name=name).start()
                    else:
                        t = bench.Serve(workdir, cores, config, detour, wasm, workers, name=name).start()
                    try:
                        # Enough connections that every worker serves requests (JSON and SSE).
                        for kind in ("json", "sse"):
                            loadgen.run(f"http://127.0.0.1:{t.port}{t.path(kind)}", body_for(workdir, t, kind),
                                        args.duration, 500, 8 * workers)
                        rss = bench.status_kib(t.pid, "VmRSS")
                        hwm = bench.status_kib(t.pid, "VmHWM")
                    finally:
                        t.stop()
                    rows.append({"target": spec, "workers": workers, "round": rnd, "VmRSS_kib": rss, "VmHWM_kib": hwm})
                    print(f"profile: {spec:13s} workers={workers} VmRSS={rss / 1024:.1f} MiB VmHWM={hwm / 1024:.1f} MiB",
                          flush=True)
    finally:
        upstream.stop()

    def med(spec: str, w: int, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["target"] == spec and r["workers"] == w) / 1024

    lines = [f"Memory: {wasm}, {args.rounds} round(s), median VmRSS after {args.duration} s of JSON and SSE traffic "
             f"at 500 RPS over 8 connections per worker; load average at end {bench.loadavg()}", "",
             "| target | 1 worker | 2 workers | 4 workers | per worker (slope 1→4) |", "|---|---|---|---|---|"]
    slopes = {}
    for spec in ("envoy", "floor:noop", "envoy+detour", "serve"):
        v = [med(spec, w, "VmRSS_kib") for w in (1, 2, 4)]
        slopes[spec] = (v[2] - v[0]) / 3
        lines.append(f"| {spec} (VmRSS MiB) | {v[0]:.1f} | {v[1]:.1f} | {v[2]:.1f} | {slopes[spec]:.2f} |")
    lines += ["", f"filter per Envoy worker (slope with − slope without): "
              f"{slopes['envoy+detour'] - slopes['envoy']:.2f} MiB; fixed part with 1 worker: "
              f"{med('envoy+detour', 1, 'VmRSS_kib') - med('envoy', 1, 'VmRSS_kib') - (slopes['envoy+detour'] - slopes['envoy']):.1f} MiB, "
              f"of which V8 and the wasm extension with an empty module: "
              f"{med('floor:noop', 1, 'VmRSS_kib') - med('envoy', 1, 'VmRSS_kib'):.1f} MiB"]
    text = "\n".join(lines) + "\n"
    print(text)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (out_dir / f"memory-{stamp}.md").write_text(text)
    (out_dir / f"memory-{stamp}.json").write_text(json.dumps(rows, indent=1))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["ab", "perf", "memory"])
    ap.add_argument("--variants", default="envoy,envoy+detour,envoy+detour@warning,serve")
    ap.add_argument("--perf-target", default="envoy+detour")
    ap.add_argument("--wasm", default="", help="memory: the filter to measure (default target/detour.wasm)")
    ap.add_argument("--keep", action="store_true", help="ab: keep the work directory (the targets' logs)")
    ap.add_argument("--budgets", action="store_true", help="ab: a config with prices, rpm/tpm and budgets")
    ap.add_argument("--kind", default="json", choices=["json", "sse", "fallback"])
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per point (ab, memory)")
    ap.add_argument("--seconds", type=float, default=15.0, help="seconds under perf (perf)")
    ap.add_argument("--freq", type=int, default=2000, help="perf sampling frequency (Hz)")
    ap.add_argument("--out", default=str(ROOT / "target" / "bench" / "profile"))
    args = ap.parse_args()
    return {"ab": cmd_ab, "perf": cmd_perf, "memory": cmd_memory}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
