"""bench/link: the link between two hosts (network namespaces A and B, veth, MTU 9000), same run:

1. throughput A→B and B→A: raw TCP (Python sockets), iperf3 (one stream), our gRPC stream
   (Diagnostics Download/Upload, raw-bytes chunks of 4 MiB) — unshaped, then through
   `tc tbf rate 10gbit burst 1mb latency 1ms` on both ends (a 10GbE line);
2. round trips A→B: raw TCP ping-pong, gRPC unary (grpc.health.v1 Check), gRPC ping-pong on
   one open Echo stream (what the agents keep open).

Goals (issue 5): stream ≥ 9.4 Gbit/s through the shaping, ≥ 0.8× raw TCP unshaped; open-stream
RTT p99 < 0.5 ms. Needs root and `ip netns` (the tests' rig, tests/netns/rig.py).

    .venv/bin/python -m bench.link [--seconds 3] [--count 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from bench._common import emit, workdir
from tests.netns.rig import ROOT, TwoHosts, unavailable

TCP_PORT = 5300
IPERF_PORT = 5201


def _json_line(proc: subprocess.CompletedProcess[str] | str) -> dict[str, Any]:
    text = proc if isinstance(proc, str) else proc.stdout
    lines = [ln for ln in text.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"no result: {text[-500:]} {getattr(proc, 'stderr', '')[-1500:]}")
    return json.loads(lines[-1])


def _server(rig: TwoHosts, key: str, args: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(rig.command(key, [sys.executable, "-m", "bench._netprobe", *args]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    proc.stdout.readline()  # {"ready": true}
    return proc


def raw_tcp(rig: TwoHosts, src: str, dst: str, seconds: float) -> float:
    """Gbit/s from host `src` to host `dst` over one Python socket, measured by the receiver."""
    sink = _server(rig, dst, ["tcp-sink", str(TCP_PORT)])
    rig.python_in(src, ["-m", "bench._netprobe", "tcp-source", rig.host(dst).ip, str(TCP_PORT), str(seconds)],
                  timeout=seconds + 30, check=True)
    out, _ = sink.communicate(timeout=30)
    return float(_json_line(out)["gbit"])


def iperf3(rig: TwoHosts, src: str, dst: str, seconds: float) -> float | None:
    """iperf3, one stream, src -> dst; None without iperf3."""
    if shutil.which("iperf3") is None:
        return None
    server = subprocess.Popen(rig.command(dst, ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        proc = rig.run_in(src, ["iperf3", "-c", rig.host(dst).ip, "-p", str(IPERF_PORT), "-t", str(seconds),
                                "-O", "1", "-J"], timeout=seconds + 30)
        data = json.loads(proc.stdout)
        return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        server.wait(timeout=10)


def grpc_figures(rig: TwoHosts, seconds: float, count: int) -> dict[str, Any]:
    """From host A: gRPC unary and open-stream RTT to agent B, then Download (B→A) and Upload (A→B)."""
    proc = rig.python_in("a", ["-m", "bench._netprobe", "grpc", rig.b.address, rig.token, str(seconds), str(count)],
                         timeout=seconds * 3 + count * 0.05 + 60)
    return _json_line(proc)


def tcp_rtt(rig: TwoHosts, count: int) -> dict[str, Any]:
    echo = _server(rig, "b", ["tcp-echo", str(TCP_PORT + 1)])
    try:
        return _json_line(rig.python_in("a", ["-m", "bench._netprobe", "tcp-pingpong", rig.b.ip,
                                              str(TCP_PORT + 1), str(count)], timeout=120))
    finally:
        echo.wait(timeout=10)


def throughput(rig: TwoHosts, seconds: float, count: int) -> dict[str, Any]:
    g = grpc_figures(rig, seconds, count)
    return {
        "raw_tcp_a_to_b_gbit": raw_tcp(rig, "a", "b", seconds),
        "raw_tcp_b_to_a_gbit": raw_tcp(rig, "b", "a", seconds),
        "iperf3_a_to_b_gbit": iperf3(rig, "a", "b", seconds),
        "iperf3_b_to_a_gbit": iperf3(rig, "b", "a", seconds),
        "grpc_a_to_b_gbit": g["upload_gbit"],
        "grpc_b_to_a_gbit": g["download_gbit"],
        "grpc_client_cpu_up": g["upload_cpu"],
        "grpc_client_cpu_down": g["download_cpu"],
        "machine_cpu_busy": g["system_cpu"],
        "_rtt": g,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per throughput measurement")
    parser.add_argument("--count", type=int, default=2000, help="round trips per RTT measurement")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reason = unavailable()
    if reason:
        print(f"bench.link needs the two-host rig: {reason}", file=sys.stderr)
        return 2
    # Shared 2-core machines are noisy: the load around the run says how far to trust it.
    results: dict[str, Any] = {"seconds": args.seconds, "rtt_count": args.count,
                               "loadavg_1m_before": os.getloadavg()[0]}
    with TwoHosts(workdir("link")) as rig:
        results["mtu"] = rig.mtu
        unshaped = throughput(rig, args.seconds, args.count)
        rtt = unshaped.pop("_rtt")
        rtt_raw = tcp_rtt(rig, args.count)
        rig.shape("10gbit")
        shaped = throughput(rig, args.seconds, 100)
        shaped.pop("_rtt")
        rig.unshape()
    results["loadavg_1m_after"] = os.getloadavg()[0]
    results |= {f"unshaped_{k}": v for k, v in unshaped.items()}
    results |= {f"tbf10g_{k}": v for k, v in shaped.items()}
    results |= {"rtt_raw_tcp_p50_ms": rtt_raw["p50_ms"], "rtt_raw_tcp_p99_ms": rtt_raw["p99_ms"],
                "rtt_grpc_unary_p50_ms": rtt["unary_p50_ms"], "rtt_grpc_unary_p99_ms": rtt["unary_p99_ms"],
                "rtt_grpc_stream_p50_ms": rtt["stream_p50_ms"], "rtt_grpc_stream_p99_ms": rtt["stream_p99_ms"]}
    grpc_shaped = min(shaped["grpc_a_to_b_gbit"], shaped["grpc_b_to_a_gbit"])
    ratio = min(unshaped["grpc_a_to_b_gbit"] / unshaped["raw_tcp_a_to_b_gbit"],
                unshaped["grpc_b_to_a_gbit"] / unshaped["raw_tcp_b_to_a_gbit"])
    results |= {"goal_stream_tbf10g_ge_9.4": grpc_shaped >= 9.4,
                "ratio_grpc_vs_raw_tcp_unshaped": ratio, "goal_ratio_ge_0.8": ratio >= 0.8,
                "goal_stream_rtt_p99_lt_0.5ms": rtt["stream_p99_ms"] < 0.5}
    emit(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
