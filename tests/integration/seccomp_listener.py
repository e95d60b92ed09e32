#!/usr/bin/env python3
"""A seccomp user-notification agent for the tests (config-linux.md "listenerPath").

usage: seccomp_listener.py SOCKET OUTDIR ERRNO

Accepts connections on SOCKET; each brings the containerProcessState JSON and the
notify fd (SCM_RIGHTS). Writes the state to OUTDIR/state-<n>.json, then answers every
notification on every fd with -ERRNO and appends the syscall number to OUTDIR/calls.
Stops when OUTDIR/stop appears or OUTDIR goes (or after two minutes).
"""
import array
import fcntl
import json
import os
import select
import socket
import struct
import sys
import time

NOTIF_RECV = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif), 80 bytes
NOTIF_SEND = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp), 24 bytes


def receive_state(conn):
    fds = array.array("i")
    data = b""
    deadline = time.time() + 10
    while time.time() < deadline:
        msg, anc, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(16))
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if not msg:
            break
        data += msg
        try:
            return json.loads(data), list(fds)
        except ValueError:
            continue
    return json.loads(data), list(fds)


def main():
    path, outdir, err = sys.argv[1], sys.argv[2], int(sys.argv[3])
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    open(os.path.join(outdir, "ready"), "w").close()
    poller = select.poll()
    poller.register(srv.fileno(), select.POLLIN)
    notify_fds = set()
    count = 0
    end = time.time() + 120
    # The test's scratch dir can be gone before a poll sees "stop": that ends it too.
    while time.time() < end and os.path.isdir(outdir) and not os.path.exists(os.path.join(outdir, "stop")):
        for fd, ev in poller.poll(100):
            if fd == srv.fileno():
                conn, _ = srv.accept()
                state, fds = receive_state(conn)
                conn.close()
                count += 1
                with open(os.path.join(outdir, "state-%d.json" % count), "w") as f:
                    json.dump({"state": state, "nfds": len(fds)}, f)
                for nfd in fds:
                    notify_fds.add(nfd)
                    poller.register(nfd, select.POLLIN)
                continue
            if ev & select.POLLIN:
                req = bytearray(80)
                try:
                    fcntl.ioctl(fd, NOTIF_RECV, req, True)
                except OSError:
                    continue  # the task died before we got it
                notif_id, _pid, _flags, nr = struct.unpack_from("QIIi", req)
                with open(os.path.join(outdir, "calls"), "a") as f:
                    f.write("%d\n" % nr)
                resp = bytearray(struct.pack("QqiI", notif_id, 0, -err, 0))
                try:
                    fcntl.ioctl(fd, NOTIF_SEND, resp, True)
                except OSError:
                    pass
            elif ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                poller.unregister(fd)
                notify_fds.discard(fd)
                os.close(fd)


if __name__ == "__main__":
    main()
