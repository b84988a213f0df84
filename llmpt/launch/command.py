"""The exact `python -m paddle.distributed.launch …` command for a run; pure string building, no paddle import."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmpt.errors import LlmptError
from llmpt.run_dir import RunDir

if TYPE_CHECKING:
    from llmpt.run_config import RunConfig

# The per-rank entry point the launcher starts on every rank: it reads run.yaml and nothing else.
RANK_ENTRY = Path(__file__).resolve().parents[1] / "train" / "entry.py"


@dataclass(frozen=True)
class Topology:
    """Where the ranks run: devices on this node, node count, and how nodes find each other."""

    devices: tuple[str, ...]
    device: str = "gpu"
    nnodes: int = 1
    master: str | None = None
    node_rank: int | None = None

    @property
    def nproc_per_node(self) -> int:
        return len(self.devices)

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


def parse_devices(text: str, flag: str = "--gpus") -> tuple[str, ...]:
    """'8' -> devices 0..7; '0,1,2,3' -> those ids. Refuse anything else with one line."""
    text = text.strip()
    if text.isdigit() and "," not in text:
        n = int(text)
        if n < 1:
            raise LlmptError(f"{flag} {text}: need at least one device", f"e.g. {flag} 8 or {flag} 0,1,2,3")
        return tuple(str(i) for i in range(n))
    ids = [t.strip() for t in text.split(",")]
    if not ids or any(not t.isdigit() for t in ids):
        raise LlmptError(
            f"{flag} {text!r}: expected a device count (8) or comma-separated device ids (0,1,2,3)",
            f"e.g. {flag} 8",
        )
    if len(set(ids)) != len(ids):
        raise LlmptError(f"{flag} {text}: device ids repeat", f"e.g. {flag} {','.join(sorted(set(ids), key=int))}")
    return tuple(ids)


def check_multinode(nnodes: int, master: str | None, node_rank: int | None) -> None:
    if nnodes < 1:
        raise LlmptError(f"--nnodes {nnodes}: must be >= 1")
    if nnodes > 1 and not master:
        raise LlmptError(f"--nnodes {nnodes} needs --master HOST:PORT (the rank-0 node's address)")
    if master is not None:
        host, _, port = master.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise LlmptError(f"--master {master!r}: expected HOST:PORT, e.g. 10.0.0.1:8090")
    if node_rank is not None and not 0 <= node_rank < nnodes:
        raise LlmptError(f"--node-rank {node_rank}: must be in 0..{nnodes - 1} for --nnodes {nnodes}")


def check_master_port(master: str | None, node_rank: int | None) -> None:
    """On the node that hosts the rendezvous (--node-rank 0, or unset), --master's port must be free here: the
    launcher would otherwise fail after the ranks started, or join a stranger's job."""
    import errno
    import socket

    if not master or node_rank not in (None, 0):
        return
    host, _, port = master.rpartition(":")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (socket.gaierror, ValueError):
        return  # an unknown host is the launcher's to report
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(addr)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise LlmptError(
                        f"--master {master}: port {port} is already in use on this host",
                        "pick another port, or stop the process holding it (ss -ltnp)",
                    ) from None
                return  # EADDRNOTAVAIL: the master is another machine; nothing to check here
            return


# The ports a multi-node run opens, all fixed by --master's port M (llmpt run-node pins them; README "Multi-node"):
#   M                      the rendezvous: paddle.distributed.launch's HTTP key-value server, on node 0
#   S = M + STORE_OFFSET   the ranks' TCP store (PADDLE_MASTER), served by rank 0. The launcher picks it at random from
#                          PORT_RANGE (35100:64000, paddle/distributed/launch/context/node.py) unless the range is one
#                          port: llmpt passes PORT_RANGE=S:S
#   S + 1 + group id       each gloo sub-group's TCP store (llmpt/train/cpu_backend.py), served on the host of the
#                          group's first rank; group ids seen: up to 12 for dp2, 17 for tp2pp2 on 4 CPU ranks
#   FLAGS_FIXED_PORT + i   the per-rank endpoints the launcher announces (PADDLE_TRAINER_ENDPOINTS); no CPU rank opens
#                          them (ss -ltnp during a dp2 run), so they are placed after the group window and not checked
STORE_OFFSET = 1
GROUP_PORTS = 128


@dataclass(frozen=True)
class RunPorts:
    """The ports of a run whose rendezvous is on `master` (a port number)."""

    master: int

    @property
    def store(self) -> int:
        return self.master + STORE_OFFSET

    @property
    def groups(self) -> range:
        return range(self.store + 1, self.store + 1 + GROUP_PORTS)

    @property
    def endpoints(self) -> int:
        return self.groups.stop

    def env(self) -> dict[str, str]:
        """What paddle.distributed.launch reads to use these ports instead of random ones."""
        return {"PORT_RANGE": f"{self.store}:{self.store}", "FLAGS_FIXED_PORT": str(self.endpoints)}

    def opened_on(self, node_rank: int | None) -> list[tuple[int, str]]:
        """(port, what) a node opens: node 0 the rendezvous and the store; every node its groups' stores."""
        own = [(self.master, "the rendezvous"), (self.store, "the ranks' store")] if not node_rank else []
        return own + [(p, "a rank group's store") for p in self.groups]


def check_ports_free(master: str, ports: list[tuple[int, str]]) -> None:
    """Each port is free on this host (bound on every address, as the stores bind): refused naming the first in use.
    A port in TIME_WAIT is free (SO_REUSEADDR, as the servers set it)."""
    import errno
    import socket

    for port, what in ports:
        if not 0 < port < 65536:
            raise LlmptError(f"--master {master}: {what} would be on port {port}, beyond 65535", "pick a lower port")
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("", port))
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
                first = ports[0][0]
                raise LlmptError(
                    f"--master {master}: port {port} ({what}; this run uses {first}..{ports[-1][0]}) is already in use "
                    "on this host",
                    "pick another --master port, or stop the process holding it (ss -ltnp)",
                ) from None


def is_local_address(ip: str) -> bool:
    """`ip` is an address of this machine (a socket can be bound to it)."""
    import socket

    try:
        infos = socket.getaddrinfo(ip, 0, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, ValueError):
        return False
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        try:
            sock.bind(addr)
        except OSError:
            return False
    return True


def resolve_master(master: str | None) -> str | None:
    """--master with its host as an IP address: paddle.distributed.launch serves the rendezvous only on the node
    whose own IP is the master's (a host name never matches), and the ranks reach the store at that address."""
    import ipaddress
    import socket

    if not master:
        return master
    host, _, port = master.rpartition(":")
    try:
        ipaddress.ip_address(host)
        return master
    except ValueError:
        pass
    try:
        return f"{socket.gethostbyname(host)}:{port}"
    except OSError:
        raise LlmptError(
            f"--master {master}: the host {host!r} does not resolve on this node",
            "pass the first node's IP address or a name every node resolves",
        ) from None


def check_host(host: str | None) -> None:
    """--host: this node's IP address as the other nodes reach it (paddle.distributed.launch --host / POD_IP)."""
    import ipaddress

    if host is None:
        return
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise LlmptError(f"--host {host!r}: expected this node's IPv4 address, e.g. 10.0.0.2") from None
    if not is_local_address(host):
        raise LlmptError(f"--host {host}: not an address of this machine", "see `ip -4 addr` for this node's addresses")


def check_master_here(master: str | None, node_rank: int | None) -> None:
    """Node 0 hosts the rendezvous: --master (resolved) must be one of its own addresses, or no launcher serves it
    and every node waits for it."""
    if not master or node_rank not in (None, 0):
        return
    host = master.rpartition(":")[0]
    if not is_local_address(host):
        raise LlmptError(
            f"--master {master}: --node-rank {node_rank or 0} hosts the rendezvous, but {host} is not an address of "
            "this machine",
            "start node 0 on the master's machine, or pass that machine's address as --master",
        )


def build_launch_command(topo: Topology, run_yaml: Path, log_dir: Path, python: str | None = None) -> list[str]:
    """argv for paddle.distributed.launch starting RANK_ENTRY on every rank with `run_yaml`."""
    cmd = [python or sys.executable, "-m", "paddle.distributed.launch", "--log_dir", str(log_dir)]
    if topo.device == "gpu":
        cmd += ["--devices", ",".join(topo.devices)]
    else:
        # CPU ranks have no device ids; the launcher picks gloo for them.
        cmd += ["--nproc_per_node", str(topo.nproc_per_node)]
    if topo.nnodes > 1:
        cmd += ["--nnodes", str(topo.nnodes)]
    if topo.master:
        cmd += ["--master", topo.master]
    if topo.node_rank is not None:
        cmd += ["--rank", str(topo.node_rank)]
    return [*cmd, str(RANK_ENTRY), str(run_yaml)]


def run_launch_command(cfg: RunConfig) -> list[str]:
    """The command that starts this node's ranks of a resolved run, on this machine: --master with its host as an
    IP address, and on node 0, when that address is this machine's, `--host` it: paddle.distributed.launch serves
    the rendezvous only on the node whose own IP is the master's string (a host name, or a node whose hostname
    resolves to another of its addresses, would leave every node waiting for "master not ready")."""
    from dataclasses import replace

    run = RunDir(cfg.output_dir)
    topo = cfg.topology
    cmd = build_launch_command(topo, run.run_yaml, run.log_dir(cfg.nnodes, cfg.node_rank))
    if not topo.master:
        return cmd
    try:
        master = resolve_master(topo.master)
    except LlmptError:
        return cmd  # not resolvable here: the launcher will say so
    cmd = build_launch_command(replace(topo, master=master), run.run_yaml, run.log_dir(cfg.nnodes, cfg.node_rank))
    host = master.rpartition(":")[0]
    if topo.node_rank in (None, 0) and is_local_address(host):
        cmd[-2:-2] = ["--host", host]
    return cmd


def format_command(argv: list[str]) -> str:
    return shlex.join(argv)
