"""Runs inside a hardbox sandbox and prints one JSON report of what the sandbox lets it do.

Every attempt records an errno name ("EPERM", ...) when it failed or "ok" when it succeeded;
the test on the host asserts the report field by field. Usage:
    python3 probe.py WORKSPACE HOME HOST_PORT HOST_PID
"""

import ctypes
import errno
import json
import os
import platform
import socket
import sys

WORKSPACE, HOME, HOST_PORT, HOST_PID = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

# (x86_64, aarch64) syscall numbers.
SYSCALLS = {
    "ptrace": (101, 117),
    "mount": (165, 40),
    "unshare": (272, 97),
    "keyctl": (250, 219),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "io_uring_setup": (425, 425),
}
ARCH = {"x86_64": 0, "aarch64": 1}[platform.machine()]
LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long

PTRACE_ATTACH = 16
CLONE_NEWUSER = 0x10000000
KEYCTL_GET_KEYRING_ID = 0
KEY_SPEC_SESSION_KEYRING = -3
BPF_MAP_CREATE = 0


class BpfMapAttr(ctypes.Structure):
    _fields_ = [
        ("map_type", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("pad", ctypes.c_uint8 * 112),
    ]


class IoUringParams(ctypes.Structure):
    _fields_ = [("raw", ctypes.c_uint8 * 120)]


class PerfEventAttr(ctypes.Structure):
    # type, size, config, then the rest zeroed: a software cpu-clock counter on this task.
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("rest", ctypes.c_uint8 * 112),
    ]


def name(number):
    return errno.errorcode.get(number, str(number))


def syscall(call, *args):
    """Returns "ok" or the errno name of a raw syscall."""
    ctypes.set_errno(0)
    result = LIBC.syscall(ctypes.c_long(SYSCALLS[call][ARCH]), *args)
    return "ok" if result >= 0 else name(ctypes.get_errno())


def attempt(action):
    """Returns "ok" or the errno name of an OSError raised by `action`."""
    try:
        action()
        return "ok"
    except OSError as error:
        return name(error.errno)


def read(path):
    with open(path, "rb") as file:
        return file.read()


def write(path, data):
    with open(path, "wb") as file:
        file.write(data)


def status():
    fields = {}
    for line in read("/proc/self/status").decode().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    keys = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"]
    return {key: fields.get(key) for key in keys}


def connect():
    socket.create_connection(("127.0.0.1", HOST_PORT), timeout=5).close()


def secret(path, link_dir):
    """Reads `path` directly, through a symlink and through a hardlink made in the workspace."""
    symlink = os.path.join(link_dir, os.path.basename(path) + ".symlink")
    hardlink = os.path.join(link_dir, os.path.basename(path) + ".hardlink")
    os.symlink(path, symlink)
    linked = attempt(lambda: os.link(path, hardlink))
    return {
        "read": attempt(lambda: read(path)),
        "symlink": attempt(lambda: read(symlink)),
        "hardlink": linked,
        "hardlink_read": attempt(lambda: read(hardlink)) if linked == "ok" else None,
    }


def main():
    links = os.path.join(WORKSPACE, "links")
    os.mkdir(links)
    me = os.getpid()
    perf = PerfEventAttr(type=1, size=ctypes.sizeof(PerfEventAttr), config=0)
    bpf = BpfMapAttr(map_type=1, key_size=4, value_size=4, max_entries=1)
    ring = IoUringParams()
    report = {
        "euid": os.geteuid(),
        "pid": me,
        "pids": sorted(int(entry) for entry in os.listdir("/proc") if entry.isdigit()),
        "status": status(),
        # /proc is mounted writable and this process owns its comm file: only Landlock refuses.
        "landlock_comm": attempt(lambda: write("/proc/self/comm", b"probe")),
        "write_self_exe": attempt(lambda: write("/proc/self/exe", b"")),
        "write_init_exe": attempt(lambda: write("/proc/1/exe", b"")),
        "ptrace_init": syscall("ptrace", PTRACE_ATTACH, 1, 0, 0),
        "ptrace_host_pid": syscall("ptrace", PTRACE_ATTACH, HOST_PID, 0, 0),
        "host_pid_visible": os.path.exists(f"/proc/{HOST_PID}"),
        "mount": syscall(
            "mount", b"none", WORKSPACE.encode(), b"tmpfs", ctypes.c_ulong(0), None
        ),
        "unshare_user": syscall("unshare", CLONE_NEWUSER),
        "keyctl": syscall("keyctl", KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0),
        "bpf": syscall("bpf", BPF_MAP_CREATE, ctypes.byref(bpf), ctypes.sizeof(bpf)),
        "perf_event_open": syscall("perf_event_open", ctypes.byref(perf), 0, -1, -1, 0),
        "io_uring_setup": syscall("io_uring_setup", 1, ctypes.byref(ring)),
        "mknod_char": attempt(
            lambda: os.mknod(
                os.path.join(WORKSPACE, "null"), 0o20600, os.makedev(1, 3)
            )
        ),
        "raw_socket": attempt(
            lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        ),
        "packet_socket": attempt(
            lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        ),
        "host_tcp": attempt(connect),
        "visible": read(os.path.join(HOME, "visible.txt")).decode(),
        "shadow": secret("/etc/shadow", links),
        "ssh_key": secret(os.path.join(HOME, ".ssh", "id_rsa"), links),
        "ssh_dir_list": attempt(lambda: os.listdir(os.path.join(HOME, ".ssh"))),
    }
    print(json.dumps(report))


main()
