"""The service against a minimal hand-written server (`make bench`, `bench.py --only service`, or
run alone). Both servers run as subprocesses on free loopback ports at the same time, and are
measured in turn:

  gradsvc   `python -m gradsvc serve`: POST /v1/run with the seed job (jobs/seed_chain.yaml's
            graph, c = a*b, e = c*d) as JSON, its own a, b, d per request
  minimal   benchmarks/minimal_server.py: POST /grad {"a", "b", "d"} -> e and its gradients, from
            a pre-jitted jax.value_and_grad of the same function (float64 both)

  load      N requests from C concurrent clients (asyncio, one keep-alive connection each; see
            `Connection`) in a generator process of its own, in rounds that alternate the
            servers; both get the same random inputs. Throughput, p50 and p99 latency, errors:
            non-200 answers, timeouts, and answers whose e or de/da differ from a*b*d and b*d.
            Also the ceiling of generator and HTTP stack together: the same load on each
            server's GET /healthz.
  single    one client at a time, alternating the servers request by request: median latency
  cold      `gradsvc run jobs/seed_chain.yaml` in a new process (median wall time)
  compile   /v1/run of a graph never seen before (an extra random term: a compile) against the
            same graph sent again (its kernel cached)

    python benchmarks/service_bench.py --requests 2000 --clients 64   # a quick run
    python benchmarks/service_bench.py --generate SPEC                # one generator (internal)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
VENV_GRADSVC = ROOT / ".venv" / "bin" / "gradsvc"
SEED_GRAPH = {"c": "a * b", "e": "c * d"}  # jobs/seed_chain.yaml's graph
INPUT_SEED = 13
TIMEOUT_S = 30  # a request unanswered this long is an error (and the bench goes on)
REL_TOL = 1e-12  # float64 answers of a*b*d: a few roundings at most
UNARY = ("sin", "cos", "exp", "tanh")


# the two servers: how each is started, asked and read ----------------------------------------

def gradsvc_body(a: float, b: float, d: float, graph: dict | None = None) -> dict:
    return {"name": "seed-chain", "inputs": {"a": a, "b": b, "d": d},
            "graph": graph or SEED_GRAPH, "outputs": ["e"]}


def gradsvc_read(doc: dict) -> tuple[float, float]:
    return doc["values"]["e"], doc["grads"]["e"]["a"]


def minimal_body(a: float, b: float, d: float) -> dict:
    return {"a": a, "b": b, "d": d}


def minimal_read(doc: dict) -> tuple[float, float]:
    return doc["e"], doc["grads"]["a"]


# gradsvc's Python work in two compute processes of its own (the minimal server has none: one
# event loop is all it is); `--serve-options ''` measures the service without them
SERVE_OPTIONS = ["--processes", "2"]
GRADSVC_SERVE = [sys.executable, "-m", "gradsvc", "serve"]
SERVERS = {
    "gradsvc": {"command": [*GRADSVC_SERVE, *SERVE_OPTIONS, "--port"],
                "route": "/v1/run", "body": gradsvc_body, "read": gradsvc_read},
    "minimal": {"command": [sys.executable, str(ROOT / "benchmarks" / "minimal_server.py"),
                            "--port"],
                "route": "/grad", "body": minimal_body, "read": minimal_read},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_servers():
    """{name: port} of both servers, started here and stopped by pid when done, always (a
    SIGTERM to this process included). Their stderr goes to files: a pipe nobody reads would
    block a server that logs more than the pipe holds."""
    import httpx
    processes, ports = {}, {}
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with tempfile.TemporaryDirectory() as logs:
            for name, server in SERVERS.items():
                ports[name] = free_port()
                with open(Path(logs) / name, "wb") as log:
                    processes[name] = subprocess.Popen([*server["command"], str(ports[name])],
                                                       cwd=ROOT, stdout=subprocess.DEVNULL,
                                                       stderr=log)
            for name, port in ports.items():
                _wait_ready(httpx, processes[name], port, Path(logs) / name)
            yield ports
            _check_running(processes)
    finally:
        for process in processes.values():
            _stop(process)
        signal.signal(signal.SIGTERM, previous)


def _check_running(processes: dict) -> None:
    """A server that exited while measured lost its port to another process that took it
    between free_port() and its start: the numbers are someone else's."""
    for name, process in processes.items():
        if process.poll() is not None:
            raise RuntimeError(f"the {name} server exited during the bench (code "
                               f"{process.returncode}): its port may have been taken")


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _wait_ready(httpx, process: subprocess.Popen, port: int, log: Path,
                timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.args} did not answer /healthz in {timeout_s:.0f} s")
        time.sleep(0.1)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# the load generator: a process of its own, so that it does not share the harness's interpreter --

def random_points(n: int) -> np.ndarray:
    """n points (a, b, d), each in [0.5, 2]: the same for both servers."""
    return np.random.default_rng(INPUT_SEED).uniform(0.5, 2.0, (n, 3))


def generate(spec: dict) -> dict:
    """Send spec["count"] requests from spec["clients"] concurrent clients; latencies, the time
    span, and the errors (non-200 answers, wrong numbers)."""
    return asyncio.run(_generate(spec))


async def _generate(spec: dict) -> dict:
    points = random_points(spec["first"] + spec["count"])[spec["first"]:]
    requests = [_request(spec, point) for point in points]
    connections = [await Connection.open(spec["port"]) for _ in range(spec["clients"])]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.send(*requests[i % len(requests)])
                                                for i, c in enumerate(connections))),
                               TIMEOUT_S)  # each connection warmed up by one request
        next_index = iter(range(len(points)))
        latencies, errors = [], {"status": 0, "wrong": 0, "timeout": 0}
        start = time.perf_counter()
        await asyncio.gather(*(_client(c, spec, requests, points, next_index, latencies, errors)
                               for c in connections))
        span = time.perf_counter() - start
    finally:
        for connection in connections:
            connection.close()
    return {"latencies": latencies, "span_s": span, **errors}


def _request(spec: dict, point) -> tuple[str, str, bytes | None]:
    """(method, path, body) of one request, encoded before the clock starts."""
    if spec["healthz"]:
        return "GET", "/healthz", None
    server = SERVERS[spec["server"]]
    return "POST", server["route"], json.dumps(server["body"](*map(float, point))).encode()


async def _client(connection, spec, requests, points, next_index, latencies, errors) -> None:
    for i in next_index:  # one shared iterator: each request is taken by one client
        start = time.perf_counter()
        try:
            status, body = await asyncio.wait_for(connection.send(*requests[i]), TIMEOUT_S)
        except asyncio.TimeoutError:
            errors["timeout"] += 1
            await connection.reopen()  # the late answer must not be read as the next one's
            continue
        latencies.append(time.perf_counter() - start)
        if status != 200:
            errors["status"] += 1
        elif not spec["healthz"] and not _right(spec["server"], points[i], body):
            errors["wrong"] += 1


def _right(server: str, point, body: bytes) -> bool:
    a, b, d = map(float, point)
    e, de_da = SERVERS[server]["read"](json.loads(body))
    return _close(e, a * b * d) and _close(de_da, b * d)


def _close(got: float, expected: float) -> bool:
    return abs(got - expected) <= REL_TOL * abs(expected)


class Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: the load generator's client. Lean
    on purpose: httpx.AsyncClient spends ~0.7 ms of CPU per request, and with a pool of 64
    connections managed 190 /healthz requests/s here, so it would have measured itself."""

    def __init__(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.port, self.reader, self.writer = port, reader, writer

    @classmethod
    async def open(cls, port: int) -> "Connection":
        return cls(port, *await asyncio.open_connection("127.0.0.1", port))

    async def reopen(self) -> None:
        self.close()
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def send(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        """(status, body) of one request."""
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        answer = await self.reader.readuntil(b"\r\n\r\n")
        status, length = _status_and_length(answer)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def _status_and_length(head: bytes) -> tuple[int, int]:
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.lower().split(":", 1) for line in lines[1:] if ":" in line)
    if "content-length" not in fields:  # both servers answer with a length; chunks would be news
        raise RuntimeError(f"an answer without Content-Length: {lines[0]}")
    return int(lines[0].split()[1]), int(fields["content-length"])


def run_generator(spec: dict) -> dict:
    """One load, sent by a child process (`--generate`)."""
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--generate",
                           json.dumps(spec)], cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


# the measurements -----------------------------------------------------------------------------

def load_table(ports: dict, requests: int, clients: int, rounds: int, healthz: bool) -> dict:
    """Each server's load (or /healthz load), in `rounds` turns that alternate the servers, so a
    noisy spell of the machine hits both; every server gets the same points."""
    per_round = -(-requests // rounds)
    parts = {name: [] for name in ports}
    for r in range(rounds):
        first, count = r * per_round, min(per_round, requests - r * per_round)
        order = list(ports) if r % 2 == 0 else list(ports)[::-1]
        for name in order:
            parts[name].append(run_generator({"server": name, "port": ports[name], "first": first,
                                              "count": count, "clients": clients,
                                              "healthz": healthz}))
    return {name: _summary(got) for name, got in parts.items()}


def _summary(parts: list[dict]) -> dict:
    latencies = np.concatenate([p["latencies"] for p in parts])
    span = sum(p["span_s"] for p in parts)
    return {"requests": len(latencies), "seconds": span, "requests_per_s": len(latencies) / span,
            "p50_ms": 1e3 * float(np.percentile(latencies, 50)),
            "p99_ms": 1e3 * float(np.percentile(latencies, 99)),
            "errors_status": sum(p["status"] for p in parts),
            "errors_timeout": sum(p["timeout"] for p in parts),
            "errors_wrong": sum(p["wrong"] for p in parts)}


def single_client(ports: dict, n: int) -> dict:
    """Median latency of one client's requests, the servers alternating request by request."""
    return asyncio.run(_single_client(ports, n))


async def _single_client(ports: dict, n: int) -> dict:
    connections = {name: await Connection.open(port) for name, port in ports.items()}
    times, wrong = {name: [] for name in ports}, {name: 0 for name in ports}
    try:
        for point in random_points(n):
            for name, connection in connections.items():
                request = _request({"server": name, "healthz": False}, point)
                start = time.perf_counter()
                status, body = await connection.send(*request)
                times[name].append(time.perf_counter() - start)
                wrong[name] += status != 200 or not _right(name, point, body)
    finally:
        for connection in connections.values():
            connection.close()
    return {name: {"median_ms": 1e3 * statistics.median(t), "requests": n, "errors": wrong[name]}
            for name, t in times.items()}


def cold_run(reps: int) -> dict:
    """Wall time of `gradsvc run jobs/seed_chain.yaml` in a new process (median of reps)."""
    command = [str(VENV_GRADSVC) if VENV_GRADSVC.exists() else "gradsvc", "run",
               "jobs/seed_chain.yaml"]
    walls = []
    for _ in range(reps):
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
    return {"median_s": statistics.median(walls), "runs": reps}


def new_graph(rng: random.Random) -> dict:
    """The seed graph plus a random extra term: a structure no earlier run has compiled."""
    term = "a"
    for _ in range(6):
        term = f"{rng.choice(UNARY)}({term} * {rng.uniform(0.1, 0.9):.6f})"
    return {"c": "a * b", "e": f"c * d + {term}"}


def compile_vs_cached(port: int, reps: int) -> dict:
    """/v1/run of a new graph (compiled on the request) against the same graph again (cached):
    median latencies, and where each kernel came from as the server's answer says."""
    return asyncio.run(_compile_vs_cached(port, reps))


async def _compile_vs_cached(port: int, reps: int) -> dict:
    rng = random.Random()  # seeded from the OS: the on-disk compile cache must not know it
    new, cached, sources = [], [], []
    connection = await Connection.open(port)
    try:
        for _ in range(reps):
            body = json.dumps(gradsvc_body(2.0, 3.0, 4.0, new_graph(rng))).encode()
            for latencies in (new, cached):
                start = time.perf_counter()
                status, answer = await connection.send("POST", "/v1/run", body)
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    raise RuntimeError(f"/v1/run answered {status}: {answer[:500]!r}")
                sources.append(json.loads(answer)["timings"]["compiled_from"])
    finally:
        connection.close()
    return {"new_graph_median_ms": 1e3 * statistics.median(new),
            "cached_median_ms": 1e3 * statistics.median(cached),
            "compiled_from_new": sources[0::2], "compiled_from_cached": sources[1::2]}


def service_report(requests: int | None = None, clients: int | None = None, rounds: int = 2,
                   single: int = 200, cold: int = 5, compiles: int = 5) -> dict:
    """Every measurement of the module docstring, printed as it comes, as one dict. Requests
    and clients default to GRADSVC_SERVICE_REQUESTS and GRADSVC_SERVICE_CLIENTS, else 20,000
    and 64."""
    requests = requests or int(os.environ.get("GRADSVC_SERVICE_REQUESTS", 20_000))
    clients = clients or int(os.environ.get("GRADSVC_SERVICE_CLIENTS", 64))
    serve = " ".join(SERVERS["gradsvc"]["command"][2:-1])
    print(f"gradsvc: {serve}")
    with running_servers() as ports:
        ceiling = load_table(ports, requests, clients, rounds, healthz=True)
        _print_load("healthz (generator ceiling)", ceiling)
        load = load_table(ports, requests, clients, rounds, healthz=False)
        _print_load(f"/v1/run vs /grad, {requests:,} requests, {clients} clients", load)
        alone = single_client(ports, single)
        compiled = compile_vs_cached(ports["gradsvc"], compiles)
    report = {"settings": {"requests": requests, "clients": clients, "rounds": rounds,
                           "single": single, "cold": cold, "compiles": compiles,
                           "gradsvc": serve},
              "healthz": ceiling, "load": load, "single": alone, "cold": cold_run(cold),
              "compile": compiled}
    report["ratios"] = _ratios(report)
    _print_rest(report)
    return report


def _ratios(report: dict) -> dict:
    g, m = report["load"]["gradsvc"], report["load"]["minimal"]
    warm = report["single"]["gradsvc"]["median_ms"]
    return {"throughput_gradsvc_over_minimal": g["requests_per_s"] / m["requests_per_s"],
            "p99_gradsvc_over_minimal": g["p99_ms"] / m["p99_ms"],
            "single_gradsvc_over_minimal": warm / report["single"]["minimal"]["median_ms"],
            "cold_over_warm": 1e3 * report["cold"]["median_s"] / warm,
            "new_graph_over_cached": (report["compile"]["new_graph_median_ms"]
                                      / report["compile"]["cached_median_ms"])}


def _print_load(title: str, table: dict) -> None:
    print(title, flush=True)
    for name, row in table.items():
        print(f"  {name:8s} {row['requests_per_s']:8,.0f} req/s  p50 {row['p50_ms']:7.2f} ms  "
              f"p99 {row['p99_ms']:7.2f} ms  errors {row['errors_status']} status, "
              f"{row['errors_wrong']} wrong, {row['errors_timeout']} timed out", flush=True)


def _print_rest(report: dict) -> None:
    single, r, c = report["single"], report["ratios"], report["compile"]
    print(f"  throughput gradsvc/minimal {r['throughput_gradsvc_over_minimal']:.2f}x, p99 "
          f"{r['p99_gradsvc_over_minimal']:.2f}x", flush=True)
    print(f"one client: gradsvc {single['gradsvc']['median_ms']:.2f} ms, minimal "
          f"{single['minimal']['median_ms']:.2f} ms -> {r['single_gradsvc_over_minimal']:.2f}x",
          flush=True)
    print(f"cold `gradsvc run jobs/seed_chain.yaml` {report['cold']['median_s'] * 1e3:.0f} ms = "
          f"{r['cold_over_warm']:.0f}x a warm /v1/run", flush=True)
    print(f"new graph {c['new_graph_median_ms']:.1f} ms (kernel from {c['compiled_from_new']}) vs "
          f"cached {c['cached_median_ms']:.2f} ms -> {r['new_graph_over_cached']:.0f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, help="requests per server (default 20,000)")
    parser.add_argument("--clients", type=int, help="concurrent clients (default 64)")
    parser.add_argument("--rounds", type=int, default=2, help="turns per server, alternating")
    parser.add_argument("--single", type=int, default=200, help="one-client requests per server")
    parser.add_argument("--cold", type=int, default=5, help="cold `gradsvc run` processes")
    parser.add_argument("--compiles", type=int, default=5, help="new graphs sent")
    parser.add_argument("--out", type=Path, help="write the report here as JSON")
    parser.add_argument("--serve-options", help="options for `gradsvc serve` instead of "
                        f"{' '.join(SERVE_OPTIONS)!r} ('' for none)")
    parser.add_argument("--generate", help=argparse.SUPPRESS)  # a generator child's spec
    args = parser.parse_args()
    if args.generate:
        print(json.dumps(generate(json.loads(args.generate))))
        return
    if args.serve_options is not None:
        SERVERS["gradsvc"]["command"] = [*GRADSVC_SERVE, *shlex.split(args.serve_options),
                                         "--port"]
    report = service_report(args.requests, args.clients, args.rounds, args.single, args.cold,
                            args.compiles)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
