"""hcsshim.testing.bootvm: boot the guest boot files in QEMU once, for tests and measurements.

Not the utility VM implementation (that is hcsshim.uvm): a minimal, self-contained launcher that runs
`-kernel/-initrd/-append` with a serial console on a pipe and virtio-serial ports on host Unix sockets
(`server=on,wait=off`, as the host side uses them), collects everything with host timestamps, and returns
when QEMU exits by itself. On timeout QEMU is killed and BootTimeout carries what was seen so far.
Nothing is left behind: the sockets live in a temporary directory removed on return.
"""

from __future__ import annotations

import os
import selectors
import shlex
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

QEMU = "qemu-system-x86_64"


def kernel_arg(a: str) -> str:
    """Quote one init argument for the kernel command line (the kernel understands double quotes only)."""
    if '"' in a:
        raise ValueError(f"init argument {a!r}: the kernel command line cannot carry a double quote")
    return f'"{a}"' if (" " in a or "\t" in a or not a) else a


@dataclass
class BootRun:
    argv: list[str]
    returncode: int | None = None
    elapsed: float = 0.0
    console: list[tuple[float, str]] = field(default_factory=list)  # (seconds since launch, line)
    ports: dict[str, bytes] = field(default_factory=dict)  # port name -> bytes the guest wrote
    port_times: dict[str, float] = field(default_factory=dict)  # port name -> first data (seconds)

    def first(self, needle: str) -> float | None:
        """When the first console line containing `needle` arrived (seconds since launch)."""
        return next((t for t, line in self.console if needle in line), None)

    def console_text(self) -> str:
        return "\n".join(line for _, line in self.console)


class BootTimeout(TimeoutError):
    def __init__(self, run: BootRun, timeout: float) -> None:
        tail = "\n".join(line for _, line in run.console[-15:])
        super().__init__(f"boot VM: QEMU still running after {timeout:.0f} s; console tail:\n{tail}")
        self.run = run


def boot(kernel: Path, initrd: Path, init_args: list[str], *, ports: tuple[str, ...] = ("uvm.log",),
         cmdline: str = "console=ttyS0 panic=-1", memory_mb: int = 1024, cpus: int = 2,
         timeout: float = 120.0, extra_qemu: tuple[str, ...] = ()) -> BootRun:
    """Boot under TCG (q35) and wait for QEMU to exit by itself; `init_args` follow the kernel's `--`."""
    append = f"{cmdline} nr_cpus={cpus} -- " + " ".join(kernel_arg(a) for a in init_args)
    with tempfile.TemporaryDirectory(prefix="hcsshim-bootvm-") as tmp:
        argv = [QEMU, "-machine", "q35,accel=tcg", "-m", str(memory_mb), "-smp", str(cpus), "-nodefaults",
                "-no-user-config", "-display", "none", "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
                "-append", append, "-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con",
                "-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0",
                "-device", "virtio-serial-pci,id=vser0"]
        for i, name in enumerate(ports):
            path = os.path.join(tmp, f"p{i}.sock")
            argv += ["-chardev", f"socket,id=port{i},path={path},server=on,wait=off",
                     "-device", f"virtserialport,bus=vser0.0,chardev=port{i},name={name}"]
        argv += list(extra_qemu)
        run = BootRun(argv)
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        sel = selectors.DefaultSelector()
        socks: list[socket.socket] = []
        try:
            assert proc.stdout is not None
            os.set_blocking(proc.stdout.fileno(), False)
            sel.register(proc.stdout, selectors.EVENT_READ, "console")
            pending = {i: name for i, name in enumerate(ports)}
            buf = b""
            console_open = True
            while console_open or proc.poll() is None:
                now = time.monotonic() - t0
                if now > timeout:
                    raise BootTimeout(run, timeout)
                for i, name in list(pending.items()):  # connect as soon as QEMU has made the socket
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        s.connect(os.path.join(tmp, f"p{i}.sock"))
                    except OSError:
                        s.close()
                        continue
                    s.setblocking(False)
                    sel.register(s, selectors.EVENT_READ, name)
                    socks.append(s)
                    run.ports[name] = b""
                    del pending[i]
                for key, _ in sel.select(0.05 if pending else 0.5):
                    if key.data == "console":
                        chunk = os.read(proc.stdout.fileno(), 65536)
                        if not chunk:
                            sel.unregister(proc.stdout)
                            console_open = False
                            continue
                        buf += chunk
                        *lines, buf = buf.split(b"\n")
                        t = time.monotonic() - t0
                        run.console += [(t, ln.decode("utf-8", "replace").rstrip("\r")) for ln in lines]
                    else:
                        s = key.fileobj
                        assert isinstance(s, socket.socket)
                        try:
                            chunk = s.recv(65536)
                        except BlockingIOError:
                            continue
                        except OSError:
                            chunk = b""
                        if not chunk:
                            sel.unregister(s)
                            continue
                        run.port_times.setdefault(key.data, time.monotonic() - t0)
                        run.ports[key.data] += chunk
            if buf:
                run.console.append((time.monotonic() - t0, buf.decode("utf-8", "replace")))
            run.returncode = proc.wait()
            run.elapsed = time.monotonic() - t0
            return run
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for s in socks:
                s.close()
            sel.close()
            if proc.stdout is not None:
                proc.stdout.close()


def main() -> None:  # manual use: python -m hcsshim.testing.bootvm OUTDIR [init args...]
    import sys

    out = Path(sys.argv[1])
    run = boot(out / "vmlinux", out / "initrd.img", sys.argv[2:] or ["-e", "uvm.log", "/bin/sh", "-c", "uname -r >&2"])
    for t, line in run.console:
        print(f"{t:7.3f} {line}")
    for name, data in run.ports.items():
        print(f"--- {name} (first data at {run.port_times.get(name, 0):.3f} s)\n{data.decode(errors='replace')}")
    print(f"exit {run.returncode} after {run.elapsed:.2f} s; {shlex.join(run.argv)}")


if __name__ == "__main__":
    main()
