"""A real SSH server on loopback for tests of the SSH client, and a proxy that freezes it.

`SSHServer` is paramiko's server side: public-key login, `exec` runs the command with
bash on this machine, and SFTP serves this machine's files. `FreezingProxy` forwards
TCP between a client and a server until `freeze()`: then it stops forwarding in both
directions and keeps the connections open, like a host whose machine was stopped
(SIGSTOP): the client sees no error, only silence.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
from pathlib import Path

import paramiko


class _LocalFile(paramiko.SFTPHandle):
    def stat(self) -> paramiko.SFTPAttributes | int:
        return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))


class _LocalSFTP(paramiko.SFTPServerInterface):
    def stat(self, path: str) -> paramiko.SFTPAttributes | int:
        try:
            return paramiko.SFTPAttributes.from_stat(os.stat(path))
        except OSError as error:
            return paramiko.SFTPServer.convert_errno(error.errno)

    lstat = stat

    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> _LocalFile | int:
        writing = flags & (os.O_WRONLY | os.O_RDWR)
        try:
            f = open(path, "wb" if writing else "rb")  # noqa: SIM115 (the handle owns it)
        except OSError as error:
            return paramiko.SFTPServer.convert_errno(error.errno)
        handle = _LocalFile(flags)
        handle.filename = path
        if writing:
            handle.writefile = f
        else:
            handle.readfile = f
        return handle


class _Session(paramiko.ServerInterface):
    def __init__(self, client_key: paramiko.PKey) -> None:
        self.client_key = client_key

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return (paramiko.AUTH_SUCCESSFUL if key == self.client_key
                else paramiko.AUTH_FAILED)

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return (paramiko.OPEN_SUCCEEDED if kind == "session"
                else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED)

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        threading.Thread(target=_execute, args=(channel, command.decode()), daemon=True,
                         name="sshserver-exec").start()
        return True


def _feed_stdin(channel: paramiko.Channel, process: subprocess.Popen[bytes]) -> None:
    assert process.stdin is not None
    try:
        for chunk in iter(lambda: channel.recv(65536), b""):
            process.stdin.write(chunk)
    except OSError:
        pass
    finally:
        process.stdin.close()


def _execute(channel: paramiko.Channel, command: str) -> None:
    process = subprocess.Popen(["bash", "-c", command], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    threading.Thread(target=_feed_stdin, args=(channel, process), daemon=True,
                     name="sshserver-stdin").start()
    try:
        for chunk in iter(lambda: process.stdout.read1(65536), b""):  # type: ignore[union-attr]
            channel.sendall(chunk)
        channel.sendall_stderr(process.stderr.read())
        channel.send_exit_status(process.wait())
    except OSError:  # the client went away
        process.kill()
    finally:
        process.wait()
        channel.close()


class SSHServer:
    """Listens on 127.0.0.1; each connection gets its own paramiko transport."""

    def __init__(self, directory: Path) -> None:
        self.host_key_file = directory / "host_key"
        self.client_key_file = directory / "client_key"
        for key in (self.host_key_file, self.client_key_file):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                           check=True)
        self.host_key = paramiko.Ed25519Key.from_private_key_file(str(self.host_key_file))
        self.client_key = paramiko.Ed25519Key.from_private_key_file(str(self.client_key_file))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._transports: list[paramiko.Transport] = []
        self._thread = threading.Thread(target=self._accept, daemon=True, name="sshserver")
        self._thread.start()

    @property
    def host_public_key_file(self) -> Path:
        return self.host_key_file.with_suffix(".pub")

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(sock)
            transport.add_server_key(self.host_key)
            transport.set_subsystem_handler("sftp", paramiko.SFTPServer, _LocalSFTP)
            self._transports.append(transport)
            # With an event, the handshake runs in the transport's thread: a client that
            # never completes it does not hold up the next one.
            transport.start_server(event=threading.Event(), server=_Session(self.client_key))

    def close(self) -> None:
        _stop_listening(self._listener)
        self._thread.join(5)
        for transport in self._transports:
            transport.close()


class FreezingProxy:
    """127.0.0.1:port -> target port; `freeze()` stops all forwarding, connections open."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._running = threading.Event()
        self._running.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="proxy").start()

    def freeze(self) -> None:
        self._running.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True,
                                 name="proxy-pump").start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while not self._closed.is_set():
            self._running.wait(0.2)
            if not self._running.is_set():
                continue  # frozen: read nothing, send nothing
            source.settimeout(0.2)
            try:
                data = source.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            try:
                sink.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self._closed.set()
        _stop_listening(self._listener)
        for sock in self._sockets:
            sock.close()


def _stop_listening(listener: socket.socket) -> None:
    """Close a listening socket; shutdown first wakes the thread blocked in accept()."""
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()
