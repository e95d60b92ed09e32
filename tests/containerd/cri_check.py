#!/usr/bin/python3
"""Drives containerd's CRI plugin (runtime.v1) the way the kubelet does, against a
containerd whose config.toml names tarn as a runc.v2 runtime handler.

There is no crictl in Debian 12, so this speaks the CRI gRPC API directly with
python3-grpcio and a hand-written protobuf encoder for the few messages it needs
(field numbers from k8s.io/cri-api pkg/apis/runtime/v1/api.proto).

    cri_check.py --socket S --handler tarn --binary TARN --image REF \
                 --state-dir DIR --log-dir DIR --tag T

Prints one line per check, `ok - NAME` or `not ok - NAME` followed by `#` detail
lines, and `# cgroup PATH` / `# pid PID` lines that tell e2e.sh what to verify is
gone after cleanup. Exit status 0 when every check passed.
"""

import argparse
import json
import os
import sys
import time

import grpc

# --- a minimal protobuf encoder/decoder -------------------------------------


def _varint(n):
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def v(num, n):
    """Varint field (int32/int64/uint32/bool/enum)."""
    return _varint(num << 3) + _varint(int(n)) if n else b""


def s(num, value):
    """Length-delimited field: a string, bytes, or an encoded sub-message."""
    if isinstance(value, str):
        value = value.encode()
    return _varint((num << 3) | 2) + _varint(len(value)) + value


def msg(num, *fields):
    return s(num, b"".join(fields))


def strings(num, values):
    return b"".join(s(num, x) for x in values)


def decode(buf):
    """Decodes one message level into {field: [values]}; sub-messages stay bytes."""
    out, i = {}, 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, i = _read_varint(buf, i)
        elif wt == 2:
            ln, i = _read_varint(buf, i)
            val, i = buf[i:i + ln], i + ln
        elif wt == 1:
            val, i = buf[i:i + 8], i + 8
        elif wt == 5:
            val, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("unsupported wire type %d" % wt)
        out.setdefault(num, []).append(val)
    return out


def _read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def first(d, num, default=None):
    vals = d.get(num)
    return vals[0] if vals else default


def text(d, num):
    return first(d, num, b"").decode(errors="replace")


def signed32(n):
    n &= 0xFFFFFFFF
    return n - (1 << 32) if n & 0x80000000 else n


# --- CRI message builders (runtime.v1) --------------------------------------

NODE, CONTAINER, POD = 2, 1, 0
CONTAINER_CREATED, CONTAINER_RUNNING, CONTAINER_EXITED = 0, 1, 2
SANDBOX_READY = 0


def pod_sandbox_config(name, uid, log_dir):
    return b"".join([
        msg(1, s(1, name), s(2, uid), s(3, "default")),  # metadata
        # No hostname: the kubelet sends none for host-network pods, whose
        # sandbox then has no UTS namespace of its own.
        s(3, log_dir),  # log_directory
        # linux.security_context.namespace_options: host network like most
        # node-level pods, so no CNI is needed; pid per container as the
        # kubelet asks for v1 pods.
        msg(8, msg(2, msg(1, v(1, NODE), v(2, CONTAINER), v(3, POD)))),
    ])


def container_config(name, image, command, log_path):
    return b"".join([
        msg(1, s(1, name)),  # metadata
        msg(2, s(1, image)),  # image
        strings(3, command),
        s(11, log_path),
        msg(15, msg(2, msg(3, v(1, NODE), v(2, CONTAINER), v(3, POD)))),
    ])


class Cri:
    def __init__(self, socket):
        self.channel = grpc.insecure_channel("unix://" + socket)

    def call(self, method, body, timeout=60):
        fn = self.channel.unary_unary(
            "/runtime.v1.RuntimeService/" + method,
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        return decode(fn(body, timeout=timeout))


# --- the checks -------------------------------------------------------------

RESULTS = {"pass": 0, "fail": 0}


def report(name, good, details=()):
    RESULTS["pass" if good else "fail"] += 1
    print(("ok - " if good else "not ok - ") + name)
    if not good:
        for line in details:
            for sub in str(line).splitlines() or [""]:
                print("#   " + sub)
    sys.stdout.flush()


def grpc_error(e):
    if isinstance(e, grpc.RpcError):
        return "%s: %s" % (e.code().name, e.details())
    return repr(e)


def bundle_dir(state_dir, cid):
    return os.path.join(state_dir, "io.containerd.runtime.v2.task", "k8s.io", cid)


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return "<%s>" % e


def note_bundle(state_dir, cid):
    """Tells e2e.sh which cgroup and pid this task has, for the leftover checks."""
    b = bundle_dir(state_dir, cid)
    try:
        with open(os.path.join(b, "config.json")) as f:
            cg = json.load(f).get("linux", {}).get("cgroupsPath", "")
        if cg:
            print("# cgroup " + cg)
    except (OSError, ValueError):
        pass
    pid = read(os.path.join(b, "init.pid")).strip()
    if pid.isdigit():
        stat = read("/proc/%s/stat" % pid)
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 19:
            print("# pid %s %s" % (pid, fields[19]))
    return pid


def container_status(cri, cid):
    st = decode(first(cri.call("ContainerStatus", s(1, cid)), 1, b""))
    return first(st, 3, 0), signed32(first(st, 7, 0)), text(st, 10), text(st, 11)


def wait_state(cri, cid, want, seconds=30):
    deadline = time.monotonic() + seconds
    while True:
        state, code, reason, message = container_status(cri, cid)
        if state == want or time.monotonic() > deadline:
            return state, code, reason, message
        time.sleep(0.2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--handler", required=True)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--log-dir", required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--expect-oom", default="-998",
                    help="the sandbox's oom_score_adj: -998, or containerd's own when "
                    "restrict_oom_score_adj is on")
    a = ap.parse_args()
    cri = Cri(a.socket)
    P = "f: CRI: "

    try:
        ver = cri.call("Version", s(1, "v1"))
        report(P + "Version answers (runtime.v1)", text(ver, 2) == "containerd",
               ["runtime_name=%r" % text(ver, 2)])
    except Exception as e:  # noqa: BLE001 - any failure is a failed check
        report(P + "Version answers (runtime.v1)", False, [grpc_error(e)])
        return

    sb_config = pod_sandbox_config("e2e-pod-" + a.tag, "uid-" + a.tag, a.log_dir)
    try:
        sb = text(cri.call("RunPodSandbox", s(1, sb_config) + s(2, a.handler), timeout=120), 1)
    except Exception as e:  # noqa: BLE001
        report(P + "RunPodSandbox with runtime_handler %s" % a.handler, False, [grpc_error(e)])
        return
    st = decode(first(cri.call("PodSandboxStatus", s(1, sb)), 1, b""))
    report(P + "RunPodSandbox with runtime_handler %s gives a ready sandbox" % a.handler,
           first(st, 3, 0) == SANDBOX_READY, ["sandbox %s state %s" % (sb, first(st, 3, 0))])

    opts = read(os.path.join(bundle_dir(a.state_dir, sb), "options.json"))
    try:
        binary = json.loads(opts).get("binary_name", "")
    except ValueError:
        binary = ""
    report(P + "the shim runs the sandbox with options.BinaryName from config.toml",
           binary == a.binary, ["options.json: " + opts, "expected binary_name " + a.binary])

    pid = note_bundle(a.state_dir, sb)
    adj = read("/proc/%s/oom_score_adj" % pid).strip() if pid.isdigit() else "<no init.pid>"
    report(P + "sandbox init has oomScoreAdj %s (CRI asks -998%s)" % (
        a.expect_oom, "" if a.expect_oom == "-998" else ", restrict_oom_score_adj clamps it"),
        adj == a.expect_oom, ["/proc/%s/oom_score_adj = %s" % (pid, adj)])

    # A container that prints and exits with a status.
    name = "CreateContainer + StartContainer: output reaches the CRI log, exit code 7"
    try:
        cid = text(cri.call("CreateContainer", s(1, sb) + s(2, container_config(
            "once", a.image, ["/bin/sh", "-c", "echo cri-hello; exit 7"], "once.log"))
            + s(3, sb_config)), 1)
        note_bundle(a.state_dir, cid)
        cri.call("StartContainer", s(1, cid))
        state, code, reason, message = wait_state(cri, cid, CONTAINER_EXITED)
        log = read(os.path.join(a.log_dir, "once.log"))
        report(P + name, state == CONTAINER_EXITED and code == 7 and "cri-hello" in log,
               ["state=%d exit_code=%d reason=%s message=%s" % (state, code, reason, message),
                "log: " + log])
        cri.call("RemoveContainer", s(1, cid))
    except Exception as e:  # noqa: BLE001
        report(P + name, False, [grpc_error(e)])

    # Created, never started, then removed: the runtime must kill the parked init.
    name = "a created container that never started can be removed"
    try:
        cid = text(cri.call("CreateContainer", s(1, sb) + s(2, container_config(
            "unstarted", a.image, ["/bin/true"], "unstarted.log")) + s(3, sb_config)), 1)
        note_bundle(a.state_dir, cid)
        state, code, reason, message = container_status(cri, cid)
        cri.call("RemoveContainer", s(1, cid))
        gone = not os.path.exists(bundle_dir(a.state_dir, cid))
        report(P + name, state == CONTAINER_CREATED and gone,
               ["state before removal=%d, bundle removed=%s" % (state, gone)])
    except Exception as e:  # noqa: BLE001
        report(P + name, False, [grpc_error(e)])

    # A long-running container: exec into it, update it, stop it.
    long_cmd = ["/bin/sh", "-c", 'trap "exit 0" TERM; /bin/sleep infinity & wait']
    try:
        cid = text(cri.call("CreateContainer", s(1, sb) + s(2, container_config(
            "long", a.image, long_cmd, "long.log")) + s(3, sb_config)), 1)
        cri.call("StartContainer", s(1, cid))
        state, code, reason, message = wait_state(cri, cid, CONTAINER_RUNNING)
        note_bundle(a.state_dir, cid)
        report(P + "a long-running container is RUNNING", state == CONTAINER_RUNNING,
               ["state=%d reason=%s message=%s" % (state, reason, message)])
    except Exception as e:  # noqa: BLE001
        report(P + "a long-running container is RUNNING", False, [grpc_error(e)])
        cid = None

    if cid:
        name = "ExecSync runs a command in the container (exit code 3 comes back)"
        try:
            r = cri.call("ExecSync", s(1, cid) + strings(2, [
                "/bin/sh", "-c", "echo exec-ok; exit 3"]) + v(3, 20))
            out, code = first(r, 1, b"").decode(errors="replace"), signed32(first(r, 3, 0))
            report(P + name, "exec-ok" in out and code == 3,
                   ["stdout=%r stderr=%r exit_code=%d" % (out, first(r, 2, b""), code)])
        except Exception as e:  # noqa: BLE001
            report(P + name, False, [grpc_error(e)])

        name = "UpdateContainerResources (runtime `update --resources -`) sets the memory limit"
        limit = 96 * 1024 * 1024
        try:
            cri.call("UpdateContainerResources",
                     s(1, cid) + msg(2, v(3, 512), v(4, limit)))
            cfg = json.loads(read(os.path.join(bundle_dir(a.state_dir, cid), "config.json")))
            cg = cfg.get("linux", {}).get("cgroupsPath", "")
            got = read("/sys/fs/cgroup/memory%s/memory.limit_in_bytes" % cg).strip()
            report(P + name, got == str(limit),
                   ["memory.limit_in_bytes of %s = %s, expected %d" % (cg, got, limit)])
        except Exception as e:  # noqa: BLE001
            report(P + name, False, [grpc_error(e)])

        name = "StopContainer (SIGTERM, grace 10 s) stops it with exit code 0; RemoveContainer"
        try:
            cri.call("StopContainer", s(1, cid) + v(2, 10), timeout=60)
            state, code, reason, message = container_status(cri, cid)
            cri.call("RemoveContainer", s(1, cid))
            gone = not os.path.exists(bundle_dir(a.state_dir, cid))
            report(P + name, state == CONTAINER_EXITED and code == 0 and gone,
                   ["state=%d exit_code=%d reason=%s message=%s bundle removed=%s"
                    % (state, code, reason, message, gone)])
        except Exception as e:  # noqa: BLE001
            report(P + name, False, [grpc_error(e)])

    name = "StopPodSandbox + RemovePodSandbox remove the sandbox"
    try:
        cri.call("StopPodSandbox", s(1, sb), timeout=60)
        cri.call("RemovePodSandbox", s(1, sb), timeout=60)
        left = cri.call("ListPodSandbox", b"").get(1, [])
        gone = not os.path.exists(bundle_dir(a.state_dir, sb))
        report(P + name, not left and gone,
               ["sandboxes still listed: %d, bundle removed=%s" % (len(left), gone)])
    except Exception as e:  # noqa: BLE001
        report(P + name, False, [grpc_error(e)])


if __name__ == "__main__":
    main()
    sys.exit(0 if RESULTS["fail"] == 0 else 1)
