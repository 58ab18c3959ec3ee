"""SSH connections, shared by `opsagent fleet` and the restore test's ssh sandbox:
paramiko, key authentication, host keys checked.

A host key must already be in the given known_hosts file: an unknown key or a
changed one is an error naming the host and the fingerprint it presented (the OpenSSH
SHA256 form, so a person can compare it with `ssh-keygen -lf`); it is never added.
`fetch_host_key` is what `opsagent fleet trust` uses to show a key to a person.
Connections go through a jump host when the target says so (ProxyJump), send
keepalives, and every wait is bounded (connect, banner, auth, command).

A command cut at its timeout or on cancel is stopped there, with its children: sshd
without a pty leaves a command running when its channel closes, so every command is
sent behind a small `sh` guard that, when the command's stdin ends while the command
still runs (the client cut it, or the connection is gone), sends TERM to the session's
process group and KILL `STOP_GRACE` seconds later. Without a pty, so stdout and stderr
stay apart.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from agents.config import FleetHost, Inventory, resolve_secret
from agents.errors import OpsagentError


class SSHError(OpsagentError):
    """A host cannot be reached or refused; one line that names the host. `reason` is
    the underlying failure alone (paramiko's or the OS's words), for callers that
    name the host their own way."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or str(self)


class HostKeyUnknown(SSHError):
    """The host presented a key that is not in known_hosts: refused, never added."""

    def __init__(self, message: str, key: paramiko.PKey) -> None:
        super().__init__(message)
        self.key = key


class HostKeyChanged(SSHError):
    """The host presented a key other than the one known_hosts has for it."""

    def __init__(self, message: str, key: paramiko.PKey, expected: paramiko.PKey) -> None:
        super().__init__(message)
        self.key = key
        self.expected = expected


@dataclass(frozen=True)
class Target:
    """A host with the inventory's defaults applied."""

    name: str
    address: str
    port: int
    user: str
    key_file: Path | None
    passphrase_file: Path | None = None
    jump: Target | None = None
    connect_timeout: float = 30.0
    keepalive: float = 0.0  # seconds between keepalives; 0: none
    # what the fleet runs there (a plain connection does not use them)
    opsagent: str = "opsagent"
    config: str | None = None
    upgrade_command: str = ""

    @property
    def where(self) -> str:
        return f"{self.name} ({self.user}@{self.address}:{self.port})"

    def known_hosts_name(self) -> str:
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


def targets(inventory: Inventory) -> dict[str, Target]:
    """Every inventory host as a Target, by name."""
    d = inventory.defaults
    by_name = {h.name: h for h in inventory.hosts}

    def build(host: FleetHost) -> Target:
        jump = build(by_name[host.jump]) if host.jump else None
        return Target(
            name=host.name,
            address=host.address,
            port=host.port or d.port,
            user=host.user or d.user,
            key_file=_expand(host.key_file or d.key_file),
            passphrase_file=_expand(host.passphrase_file or d.passphrase_file),
            jump=jump,
            opsagent=host.opsagent or d.opsagent,
            config=host.config or d.config,
            connect_timeout=d.connect_timeout.total_seconds(),
            keepalive=d.keepalive.total_seconds(),
            upgrade_command=host.upgrade_command or d.upgrade_command,
        )

    return {h.name: build(h) for h in inventory.hosts}


def _expand(path: Path | None) -> Path | None:
    return path.expanduser() if path is not None else None


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256:... fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _Reject(paramiko.MissingHostKeyPolicy):
    """RejectPolicy that says which key it refused."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise HostKeyUnknown(
            f"host key of {hostname} is not in known_hosts ({key.get_name()}"
            f" {fingerprint(key)}); refused: check it, then add it (opsagent fleet trust)",
            key,
        )


def connect(target: Target, known_hosts: Path) -> paramiko.SSHClient:
    """An authenticated client, or SSHError in one line naming the host."""
    jump_client, sock = _through_jump(target, known_hosts)
    client = paramiko.SSHClient()
    try:
        client.load_host_keys(str(known_hosts))
    except (OSError, paramiko.SSHException) as exc:
        raise SSHError(f"known_hosts {known_hosts}: {_text(exc)}", _text(exc)) from None
    client.set_missing_host_key_policy(_Reject())
    passphrase = resolve_secret(file=target.passphrase_file) if target.passphrase_file else None
    _log_in(client, target, passphrase, sock, jump_client)
    transport = client.get_transport()
    if transport is not None and target.keepalive > 0:
        transport.set_keepalive(int(max(1, target.keepalive)))
    if jump_client is not None:
        client._opsagent_jump = jump_client  # type: ignore[attr-defined]  # closed with it
    return client


def _through_jump(
    target: Target, known_hosts: Path
) -> tuple[paramiko.SSHClient | None, paramiko.Channel | None]:
    """The jump host's connection and a channel through it to the target (ProxyJump),
    or (None, None) for a target reached directly."""
    if target.jump is None:
        return None, None
    jump_client = connect(target.jump, known_hosts)
    transport = jump_client.get_transport()
    assert transport is not None
    try:
        sock = transport.open_channel(
            "direct-tcpip",
            (target.address, target.port),
            ("127.0.0.1", 0),
            timeout=target.connect_timeout,
        )
    except (paramiko.SSHException, OSError) as exc:
        jump_client.close()
        raise SSHError(
            f"{target.where}: jump host {target.jump.name} cannot reach it: {_text(exc)}",
            _text(exc),
        ) from None
    return jump_client, sock


def _log_in(
    client: paramiko.SSHClient,
    target: Target,
    passphrase: str | None,
    sock: paramiko.Channel | None,
    jump_client: paramiko.SSHClient | None,
) -> None:
    """Connect and authenticate with the key; every failure is an SSHError in one line
    (an unknown or changed host key says which key the host presented)."""
    try:
        client.connect(
            target.address,
            port=target.port,
            username=target.user,
            key_filename=str(target.key_file) if target.key_file else None,
            passphrase=passphrase,
            look_for_keys=False,
            allow_agent=target.key_file is None,
            timeout=target.connect_timeout,
            banner_timeout=target.connect_timeout,
            auth_timeout=target.connect_timeout,
            sock=sock,
        )
    except HostKeyUnknown as exc:
        client.close()
        raise HostKeyUnknown(f"{target.name}: {exc}", exc.key) from None
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyChanged(
            f"{target.name}: host key CHANGED for {target.known_hosts_name()}: it presented"
            f" {exc.key.get_name()} {fingerprint(exc.key)}, known_hosts has"
            f" {fingerprint(exc.expected_key)}; refused (possible man in the middle)",
            exc.key,
            exc.expected_key,
        ) from None
    except paramiko.ssh_exception.NoValidConnectionsError as exc:
        client.close()
        reasons = sorted({_text(e) for e in exc.errors.values()}) or [_text(exc)]
        raise SSHError(
            f"{target.where}: cannot connect: {'; '.join(reasons)}", _text(exc)
        ) from None
    except paramiko.AuthenticationException as exc:
        client.close()
        raise SSHError(f"{target.where}: authentication failed: {_text(exc)}", _text(exc)) from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        client.close()
        if jump_client is not None:
            jump_client.close()
        raise SSHError(f"{target.where}: {_text(exc)}", _text(exc)) from None


def close(client: paramiko.SSHClient) -> None:
    """Close a client from `connect`, and its jump host's connection with it."""
    client.close()
    jump = getattr(client, "_opsagent_jump", None)
    if jump is not None:
        jump.close()


STOP_GRACE = 3  # seconds from TERM to KILL for a command that was cut

# Run by the login shell before the command, in the same process group (sshd gives each
# session its own). It waits for EOF on the command's stdin, which the client never
# writes to: EOF comes when the client cuts the command or the connection is lost, and
# also after the login shell ended by itself (sshd closes stdin then), so it stops the
# group only while that shell ($PPID, the command's shell) still runs. One line with no
# quote or backslash that a login shell would change, so sh gets it as written; its
# output goes to /dev/null and the login shell runs the command as it always did, so
# stdout, stderr and the exit status are the command's own. A process that leaves the
# group (setsid) is out of its reach, as it is of a terminal's hangup.
_GUARD = (
    'sh -c \'p=$PPID; exec 3<&0 >/dev/null 2>&1; (cat <&3; kill -0 "$p" || exit 0;'
    f' trap "" TERM; kill -s TERM 0; sleep {STOP_GRACE}; kill -s KILL 0) &\'; '
)


@dataclass
class Output:
    """What a remote command gave: exit code (None when cut), stdout, stderr; a cut
    command is `stopped` once nothing of it holds its output any more."""

    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    stopped: bool = False


def run(
    client: paramiko.SSHClient, command: str, timeout: float, cancel: threading.Event
) -> Output:
    """Run a command, reading stdout and stderr as they come; cut at the timeout or on
    cancel, which stops the command and its children there (TERM, then KILL)."""
    transport = client.get_transport()
    if transport is None:
        raise SSHError("connection closed")
    channel = transport.open_session(timeout=30)
    channel.settimeout(0.2)
    channel.exec_command(_GUARD + command)
    out = bytearray()
    err = bytearray()
    deadline = time.monotonic() + timeout
    while not _read(channel, out, err):
        if cancel.is_set() or time.monotonic() > deadline:
            stopped = _stop(channel, out, err)
            return Output(None, _decoded(out), _decoded(err), timed_out=True, stopped=stopped)
    code = channel.recv_exit_status()
    channel.close()
    return Output(code, _decoded(out), _decoded(err))


def _read(channel: paramiko.Channel, out: bytearray, err: bytearray) -> bool:
    """Add what stdout and stderr have (waiting up to the channel's timeout when nothing
    has come); True once the command has ended and everything is read."""
    progressed = False
    while channel.recv_ready():
        out += channel.recv(65536)
        progressed = True
    while channel.recv_stderr_ready():
        err += channel.recv_stderr(65536)
        progressed = True
    # sshd may send the exit status before the last of the output (stderr drained
    # from the child's pipe after it exited): done only once the channel's EOF came
    if (
        channel.exit_status_ready()
        and (channel.eof_received or channel.closed)
        and not channel.recv_ready()
        and not channel.recv_stderr_ready()
    ):
        return True
    if not progressed:
        try:
            data = channel.recv(65536)
        except TimeoutError:  # socket.timeout: nothing within 0.2 s
            return False
        if data:
            out += data
        else:
            time.sleep(0.05)  # stdout closed; the exit status is on its way
    return False


def _stop(channel: paramiko.Channel, out: bytearray, err: bytearray) -> bool:
    """Cut a command: EOF on its stdin makes the guard stop it; keep what it says while
    it goes. True when sshd closed the channel within the grace and a margin, which
    it does once every process of the command has let go of its output."""
    deadline = time.monotonic() + STOP_GRACE + 2
    # a connection that is gone makes sshd close the command's stdin: the guard stops it
    with contextlib.suppress(paramiko.SSHException, OSError, EOFError):
        channel.shutdown_write()
        while not channel.closed and time.monotonic() < deadline:
            _read(channel, out, err)
    stopped = channel.closed
    channel.close()
    return stopped


def _decoded(data: bytearray) -> str:
    return data.decode(errors="replace")


def fetch_host_key(address: str, port: int, timeout: float = 10.0) -> paramiko.PKey:
    """The host key a server presents, without authenticating (for a person to verify)."""
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        raise SSHError(f"{address}:{port}: {_text(exc)}", _text(exc)) from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, EOFError) as exc:
        raise SSHError(f"{address}:{port}: {_text(exc)}", _text(exc)) from None
    finally:
        transport.close()


def _text(exc: BaseException) -> str:
    return " ".join((getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).split())
