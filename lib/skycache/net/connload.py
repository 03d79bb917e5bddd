"""A small, bounded traffic helper run *inside* a network namespace by skycache's runner:

    ip netns exec NS python -m skycache.net.connload serve   --bind A --port P --seconds S
    ip netns exec NS python -m skycache.net.connload connect --to A --port P --seconds S [--max N]
    ip netns exec NS python -m skycache.net.connload probe   --to A --proto tcp|udp|icmp [--port P]
    ip netns exec NS python -m skycache.net.connload probes  tcp:A:P udp:A:P icmp:A ...
    ip netns exec NS python -m skycache.net.connload stop    --to A --port P
    ip netns exec NS python -m skycache.net.connload rtt     --to A --port P [--count N]

``serve`` answers short TCP connections (read one byte, write one byte, close) and UDP datagrams
(echo) on the same port until ``--seconds`` pass or a client sends ``Q``. ``connect`` opens, uses and
closes TCP connections back to back (the "short flows" of the NAT measurement) and prints one JSON
object. ``probe`` makes one attempt and prints whether the peer answered. ``rtt`` times TCP connects
(SYN -> SYN/ACK: one round trip). Every loop has a time limit; nothing runs unbounded.

Only addresses in 198.18.0.0/15 or 127.0.0.1 are accepted (the runner's safety rule). This module is
a leaf program: it starts no processes, it only uses sockets.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import json
import os
import selectors
import socket
import statistics
import struct
import sys
import time
from typing import Any

BENCH_NET = ipaddress.ip_network("198.18.0.0/15")
MAX_SECONDS = 3600.0


def _check_addr(addr: str) -> str:
    ip = ipaddress.ip_address(addr)
    if ip != ipaddress.ip_address("127.0.0.1") and ip not in BENCH_NET:
        raise SystemExit(f"connload: address {addr} is outside 198.18.0.0/15 and is not 127.0.0.1")
    return addr


def _seconds(value: str) -> float:
    s = float(value)
    if not 0 < s <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"seconds must be in (0, {MAX_SECONDS:g}]")
    return s


def serve(bind: str, port: int, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    sel = selectors.DefaultSelector()
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((bind, port))
    tcp.listen(4096)
    tcp.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((bind, port))
    udp.setblocking(False)
    sel.register(tcp, selectors.EVENT_READ, "accept")
    sel.register(udp, selectors.EVENT_READ, "udp")
    served = datagrams = 0
    stop = False
    try:
        while not stop and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=min(0.5, max(0.0, deadline - time.monotonic()))):
                if key.data == "accept":
                    with contextlib.suppress(BlockingIOError):
                        conn, _ = tcp.accept()
                        conn.setblocking(False)
                        sel.register(conn, selectors.EVENT_READ, "conn")
                elif key.data == "udp":
                    with contextlib.suppress(BlockingIOError):
                        data, peer = udp.recvfrom(2048)
                        udp.sendto(data, peer)
                        datagrams += 1
                else:
                    peer_sock = key.fileobj
                    assert isinstance(peer_sock, socket.socket)
                    try:
                        data = peer_sock.recv(64)
                        if data:
                            peer_sock.sendall(data[:1])
                            served += 1
                            stop = data.startswith(b"Q")
                    except OSError:
                        pass
                    sel.unregister(peer_sock)
                    peer_sock.close()
    finally:
        for key in list(sel.get_map().values()):
            obj = key.fileobj
            if isinstance(obj, socket.socket):
                obj.close()
        sel.close()
    return {"served": served, "datagrams": datagrams, "stopped_by_client": stop}


def _one_connection(to: str, port: int, payload: bytes, timeout: float) -> None:
    with socket.create_connection((to, port), timeout=timeout) as s:
        s.sendall(payload)
        if not s.recv(1):
            raise ConnectionError("server closed without answering")


def connect(to: str, port: int, seconds: float, max_conns: int, stop_server: bool) -> dict[str, Any]:
    """Back-to-back short TCP connections for ``seconds`` (or ``max_conns``)."""
    start = time.monotonic()
    deadline = start + seconds
    done = errors = 0
    first_error = ""
    while done < max_conns and time.monotonic() < deadline:
        try:
            _one_connection(to, port, b"x", 2.0)
            done += 1
        except OSError as exc:
            errors += 1
            first_error = first_error or f"{type(exc).__name__}: {exc}"
            if errors > 100 and done == 0:
                break  # the path is down: report instead of spinning until the deadline
    elapsed = time.monotonic() - start
    if stop_server:
        with contextlib.suppress(OSError):
            _one_connection(to, port, b"Q", 2.0)
    return {
        "connections": done,
        "errors": errors,
        "seconds": elapsed,
        "conn_per_s": done / elapsed if elapsed > 0 else 0.0,
        "first_error": first_error,
    }


def _icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(int(w) for w in struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def probe_icmp(to: str, timeout: float) -> dict[str, Any]:
    """One ICMP echo request over a raw socket (root); reachable only if the matching reply comes."""
    ident = os.getpid() & 0xFFFF
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    body = b"skycache-probe"
    packet = struct.pack("!BBHHH", 8, 0, _icmp_checksum(header + body), ident, 1) + body
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.settimeout(timeout)
        s.sendto(packet, (to, 0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, peer = s.recvfrom(2048)
            except TimeoutError:
                break
            ihl = (data[0] & 0x0F) * 4
            icmp_type, code = data[ihl], data[ihl + 1]
            echo_id = int(struct.unpack("!H", data[ihl + 4 : ihl + 6])[0])
            if icmp_type == 0 and echo_id == ident and peer[0] == to:
                return {"reachable": True, "detail": "echo reply"}
            if icmp_type == 3:
                # Destination unreachable quoting our request: the path refused it (e.g. REJECT).
                return {"reachable": False, "detail": f"destination unreachable code {code} from {peer[0]}"}
            s.settimeout(max(0.01, deadline - time.monotonic()))
    return {"reachable": False, "detail": "timeout"}


def probe(to: str, proto: str, port: int, timeout: float) -> dict[str, Any]:
    if proto == "icmp":
        return probe_icmp(to, timeout)
    if proto == "tcp":
        try:
            _one_connection(to, port, b"x", timeout)
            return {"reachable": True, "detail": "connected and answered"}
        except OSError as exc:
            return {
                "reachable": False,
                "detail": f"{type(exc).__name__}: {errno.errorcode.get(exc.errno or 0, exc)}",
            }
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((to, port))
            s.send(b"skycache-probe")
            data = s.recv(2048)
            ok = data == b"skycache-probe"
            return {"reachable": ok, "detail": "echoed" if ok else "wrong answer"}
        except OSError as exc:
            return {"reachable": False, "detail": f"{type(exc).__name__}: {exc}"}


def rtt(to: str, port: int, count: int, timeout: float) -> dict[str, Any]:
    """TCP connect times (one round trip each: SYN out, SYN/ACK back), in milliseconds."""
    samples = []
    for _ in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            t0 = time.perf_counter()
            s.connect((to, port))
            samples.append((time.perf_counter() - t0) * 1000)
            s.sendall(b"x")
            s.recv(1)
        time.sleep(0.01)
    return {
        "count": len(samples),
        "median_ms": statistics.median(samples),
        "min_ms": min(samples),
        "samples_ms": samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m skycache.net.connload", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--bind", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=_seconds, required=True)
    p = sub.add_parser("connect")
    p.add_argument("--to", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=_seconds, required=True)
    p.add_argument("--max", type=int, default=100_000)
    p.add_argument("--stop-server", action="store_true")
    p = sub.add_parser("probe")
    p.add_argument("--to", required=True)
    p.add_argument("--proto", choices=("tcp", "udp", "icmp"), required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--timeout", type=_seconds, default=2.0)
    p = sub.add_parser("stop", help="tell a serve process to exit")
    p.add_argument("--to", required=True)
    p.add_argument("--port", type=int, required=True)
    p = sub.add_parser("probes", help="several probes, each PROTO:ADDR[:PORT]; prints a JSON list")
    p.add_argument("targets", nargs="+")
    p.add_argument("--timeout", type=_seconds, default=2.0)
    p = sub.add_parser("rtt")
    p.add_argument("--to", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--timeout", type=_seconds, default=5.0)
    args = parser.parse_args(argv)
    if args.mode == "serve":
        result = serve(_check_addr(args.bind), args.port, args.seconds)
    elif args.mode == "connect":
        result = connect(_check_addr(args.to), args.port, args.seconds, args.max, args.stop_server)
    elif args.mode == "probe":
        result = probe(_check_addr(args.to), args.proto, args.port, args.timeout)
    elif args.mode == "stop":
        try:
            _one_connection(_check_addr(args.to), args.port, b"Q", 2.0)
            result = {"stopped": True}
        except OSError as exc:
            result = {"stopped": False, "detail": str(exc)}
    elif args.mode == "probes":
        results = []
        for spec in args.targets[:200]:
            proto, addr, *rest = spec.split(":")
            if proto not in ("tcp", "udp", "icmp"):
                raise SystemExit(f"connload: bad probe {spec!r} (PROTO:ADDR[:PORT], PROTO tcp|udp|icmp)")
            port = int(rest[0]) if rest else 0
            results.append({"target": spec, **probe(_check_addr(addr), proto, port, args.timeout)})
        json.dump(results, sys.stdout)
        sys.stdout.write("\n")
        return 0
    else:
        result = rtt(_check_addr(args.to), args.port, max(1, min(args.count, 1000)), args.timeout)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
