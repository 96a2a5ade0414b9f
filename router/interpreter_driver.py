"""The driver of a session's persistent Python interpreter (router/interpreter.py).

Not imported by the server: its source is run inside the sandbox as
`/usr/bin/python3 -u -c <this file>` (the system Python; the standard library
only). `-u`: nothing the code prints waits in a buffer, so what was printed
before a crash is not lost.

The protocol runs over fd 0, a Unix socket the server made: each request and
each reply is a 4-byte big-endian length and that many bytes of JSON. At
startup the socket moves to a private fd (not inherited by subprocesses) and
fd 0 becomes /dev/null, so `input()` in the code reads EOF, not the protocol.
fd 1 and 2 stay the server's pipes, so the output of subprocesses is captured
too. After a call the driver writes the request's marker to both, then replies:
the server keeps a call's output up to its marker. The code runs in this
process and could write to the socket or print the marker; that only garbles
its own result, since the server decides nothing else from the reply (output
files come from the server's own look at the working folder).

Figures: there is no display, so matplotlib's backend defaults to Agg and
`pyplot.show()` saves each open figure as figure-<n>.png in the working
folder (then closes it), where the server picks it up as an output file.

A request: {"code": str, "marker": str, "cpu_seconds": int}.
A reply: {"error": str | null (an exception's last line, or "cpu_limit"), "cpu_used": float}.

CPU: RLIMIT_CPU counts the whole life of the process. The server sets the hard
limit (the session's budget); before each call the driver sets the soft limit
to the CPU used so far plus `cpu_seconds`. The kernel's SIGXCPU at the soft
limit raises CPULimitExceeded in the code: the call fails, the state stays.
"""

import ast
import builtins
import faulthandler
import importlib.machinery
import json
import linecache
import math
import os
import resource
import signal
import socket
import struct
import sys
import traceback
import types

HEADER = struct.Struct(">I")
MAX_REQUEST = 64 * 1024 * 1024


class CPULimitExceeded(BaseException):  # BaseException: the code's `except Exception` does not swallow it
    pass


def on_sigxcpu(signum, frame):  # noqa: ANN001, ANN201, ARG001
    raise CPULimitExceeded("the code used its CPU time allowance for this call")


def read_exactly(channel, size):  # noqa: ANN001, ANN201
    data = bytearray()
    while len(data) < size:
        chunk = channel.recv(min(size - len(data), 1 << 20))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def receive(channel):  # noqa: ANN001, ANN201
    header = read_exactly(channel, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_REQUEST:
        raise ValueError(f"request of {size} bytes")
    body = read_exactly(channel, size)
    return None if body is None else json.loads(body)


def send(channel, message):  # noqa: ANN001, ANN201
    data = json.dumps(message).encode()
    channel.sendall(HEADER.pack(len(data)) + data)


def cpu_used():  # noqa: ANN201
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def allow_cpu(seconds):  # noqa: ANN001, ANN201
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = math.ceil(cpu_used()) + seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def last_line(exc):  # noqa: ANN001, ANN201
    """The exception as its traceback's last line says it, on one line and short (the traceback has it all)."""
    text = " ".join(traceback.format_exception_only(type(exc), exc)[-1].split())
    return text if len(text) <= 300 else text[:297] + "..."


def run_cell(code, namespace, name, stderr):  # noqa: ANN001, ANN201
    """Run `code` as a notebook cell (the value of a last expression is shown);
    None, or the exception's last line once its traceback is on stderr."""
    try:
        tree = ast.parse(code, name)
    except (SyntaxError, ValueError) as exc:
        traceback.print_exception(type(exc), exc, None, file=stderr)
        return last_line(exc)
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)  # tracebacks show the lines
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    try:
        exec(compile(tree, name, "exec"), namespace)  # noqa: S102 - running the code is the point
        if last is not None:
            sys.displayhook(eval(compile(last, name, "eval"), namespace))  # noqa: S307
    except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt and the CPU limit included
        show(exc, stderr)
        return "cpu_limit" if isinstance(exc, CPULimitExceeded) else last_line(exc)
    return None


def show(exc, stderr):  # noqa: ANN001, ANN201
    """The traceback as Python prints it, without the driver's own frames (this module is `<string>`)."""
    exc.__traceback__ = strip(exc.__traceback__)
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=stderr)


def strip(tb):  # noqa: ANN001, ANN201
    """`tb` without run_cell's frame at its head nor the SIGXCPU handler's at its end."""
    frames = []
    while tb is not None:
        if tb.tb_frame.f_code not in (run_cell.__code__, on_sigxcpu.__code__):
            frames.append(tb)
        tb = tb.tb_next
    for here, following in zip(frames, frames[1:] + [None]):
        here.tb_next = following
    return frames[0] if frames else None


class InlineFigures:
    """A finder on sys.meta_path: once matplotlib.pyplot is imported, its show() saves the open figures."""

    def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201, ARG002
        if name != "matplotlib.pyplot":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        load = spec.loader.exec_module

        def exec_module(module):  # noqa: ANN001, ANN202
            load(module)
            module.show = saving_show(module)

        spec.loader.exec_module = exec_module
        return spec


def saving_show(pyplot):  # noqa: ANN001, ANN201
    def show(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202, ARG001 - block= and the like mean nothing here
        for number in pyplot.get_fignums():
            count = 1
            while os.path.exists(f"figure-{count}.png"):
                count += 1
            pyplot.figure(number).savefig(f"figure-{count}.png")
        pyplot.close("all")

    return show


def settle(stdout, stderr, out_fd, err_fd):  # noqa: ANN001, ANN201
    """Put the output streams back as they were, whatever the code did to them."""
    for stream in (sys.stdout, sys.stderr, stdout, stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - a stream the code broke or closed
            pass
    sys.stdout, sys.stderr = stdout, stderr
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)


def main():  # noqa: ANN201
    channel = socket.socket(fileno=os.dup(0))
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.close(null)
    out_fd, err_fd = os.dup(1), os.dup(2)  # to restore fd 1 and 2 after each call
    stdout, stderr = sys.stdout, sys.stderr
    faulthandler.enable(file=stderr)  # a segfault shows where it happened
    os.environ.setdefault("MPLBACKEND", "Agg")  # no display
    for threads in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(threads, "1")  # every thread's buffers count against the address-space limit
    sys.meta_path.insert(0, InlineFigures())
    signal.signal(signal.SIGXCPU, signal.SIG_IGN)
    # The code's globals are a fresh __main__ module's (pickle and multiprocessing look classes up there).
    driver_module = sys.modules["__main__"]  # noqa: F841 - kept alive: this code's functions use its globals
    main_module = types.ModuleType("__main__")
    main_module.__builtins__ = builtins  # type: ignore[attr-defined]
    sys.modules["__main__"] = main_module
    namespace = main_module.__dict__
    calls = 0
    driver_pid = os.getpid()
    while (request := receive(channel)) is not None:
        calls += 1
        error = None
        try:
            allow_cpu(int(request["cpu_seconds"]))
            signal.signal(signal.SIGXCPU, on_sigxcpu)
            try:
                error = run_cell(request["code"], namespace, f"<cell {calls}>", stderr)
            finally:
                signal.signal(signal.SIGXCPU, signal.SIG_IGN)
        except CPULimitExceeded:  # arrived outside the code itself
            error = "cpu_limit"
        if os.getpid() != driver_pid:  # a child the code forked came back here: it must not answer too
            os._exit(0)
        settle(stdout, stderr, out_fd, err_fd)
        marker = request["marker"].encode()
        os.write(1, marker)
        os.write(2, marker)
        send(channel, {"error": error, "cpu_used": cpu_used()})


if __name__ == "__main__":
    main()
