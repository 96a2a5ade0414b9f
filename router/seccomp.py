"""The seccomp filter of the sandbox (router/sandbox.py gives it to bubblewrap with `--seccomp FD`, which loads it
just before it runs the code): the kernel's attack surface that model-written code has no use for answers EPERM.

Denied: new namespaces (`unshare`, `setns`, `clone` with a CLONE_NEW* flag), mounting (`mount`, `umount2`,
`pivot_root`, the new mount API), `ptrace` and cross-process memory access, kernel modules, kexec, `bpf`,
`perf_event_open`, `userfaultfd`, the kernel keyring, handle-based opens, `iopl`/`ioperm`, swap, reboot, quotas,
`acct`, host names. `clone3` answers ENOSYS, so that the C library falls back to `clone`, whose flags a filter
can read (clone3 passes them in memory). Syscalls of another ABI (32-bit `int 0x80`, x32) are all denied, so
that they cannot go around the list. Everything else is allowed.

The program is classic BPF written out here: it is a short fixed list, and the library that would build it
(libseccomp) has no maintained binding on PyPI. It is built for x86-64 only; elsewhere `program()` is None and
the sandbox runs without it (router/sandbox.py says so in `Sandbox.seccomp`).
"""

from __future__ import annotations

import platform
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
EPERM, ENOSYS = 1, 38
# BPF opcodes: load word at absolute offset, jump if equal / greater or equal / any bit set, return.
LD_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
# Offsets in struct seccomp_data: nr, arch, then args[6] (64-bit each; the low half of args[0] is at 16).
NR, ARCH, ARG0_LOW = 0, 4, 16
CLONE, CLONE3 = 56, 435
CLONE_NEW_FLAGS = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET

DENIED_X86_64 = {
    "ptrace": 101, "mount": 165, "umount2": 166, "pivot_root": 155, "swapon": 167, "swapoff": 168, "reboot": 169,
    "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173, "init_module": 175, "delete_module": 176,
    "quotactl": 179, "acct": 163, "lookup_dcookie": 212, "add_key": 248, "request_key": 249, "keyctl": 250,
    "kexec_load": 246, "unshare": 272, "perf_event_open": 298, "name_to_handle_at": 303, "open_by_handle_at": 304,
    "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311, "finit_module": 313, "kexec_file_load": 320,
    "bpf": 321, "userfaultfd": 323, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "mount_setattr": 442,
}


def _instruction(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program() -> bytes | None:
    """The filter as bwrap reads it (an array of struct sock_filter), or None off x86-64."""
    if platform.machine() != "x86_64":
        return None
    denied = sorted(DENIED_X86_64.values())
    # Layout: [arch check][nr load][x32 check][a jeq per denied nr][clone][clone3][allow][clone flags][allow][deny][nosys]
    body: list[tuple[int, int, int | str, int | str]] = []  # (code, k, jt, jf) with labels to resolve
    body.append((LD_ABS, ARCH, 0, 0))
    body.append((JEQ, AUDIT_ARCH_X86_64, 0, "deny"))
    body.append((LD_ABS, NR, 0, 0))
    body.append((JGE, X32_SYSCALL_BIT, "deny", 0))
    for number in denied:
        body.append((JEQ, number, "deny", 0))
    body.append((JEQ, CLONE, "clone", 0))
    body.append((JEQ, CLONE3, "nosys", 0))
    body.append((RET, RET_ALLOW, 0, 0))
    labels = {"clone": len(body)}
    body.append((LD_ABS, ARG0_LOW, 0, 0))
    body.append((JSET, CLONE_NEW_FLAGS, "deny", 0))
    body.append((RET, RET_ALLOW, 0, 0))  # BPF jumps only forward: the clone check has its own allow
    labels["deny"] = len(body)
    body.append((RET, RET_ERRNO | EPERM, 0, 0))
    labels["nosys"] = len(body)
    body.append((RET, RET_ERRNO | ENOSYS, 0, 0))

    def offset(at: int, target: int | str) -> int:
        if isinstance(target, int):
            return target
        jump = labels[target] - at - 1
        if not 0 <= jump <= 255:
            raise AssertionError(f"BPF jump of {jump} from {at} to {target}")
        return jump

    return b"".join(_instruction(code, k, offset(at, jt), offset(at, jf)) for at, (code, k, jt, jf) in enumerate(body))
