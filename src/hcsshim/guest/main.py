"""The `gcs` command: the Linux guest agent. Parses upstream-style flags, sets up logging, dials the host's
bridge port (re-dialling every 100 ms after a loss) and serves it until the host powers the VM off.

    gcs -v4 [-loglevel debug] [-log-format text|json] [-logfile PATH] [-use-inouterr]
        [-transport vsock|unix:DIR|mux:DEVICE] [-root /run/gcs] [-share-root DIR [-share-tag TAG]]
        [-modules-ready FILE] [-sync-host-state] [-cgroup-parent /pods] [-runc runc]

With -share-tag the first MappedDirectory mounts the VM's virtio-9p device TAG (one device exporting every
share, see hcsshim.uvm.options) at the share root.

Exit status: 0 after a power-off request (or SIGTERM/SIGINT, or EOF on stdin with -use-inouterr), 2 for bad
flags, 1 when the agent cannot start. On the way out every container, UVM process and mount is removed.
When the agent is PID 1 a power-off request powers the machine off.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from hcsshim.bridge import BRIDGE_PORT
from hcsshim.goflag import FlagSet

log = logging.getLogger("hcsshim.guest")

LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "warn": logging.WARNING, "error": logging.ERROR, "fatal": logging.CRITICAL, "panic": logging.CRITICAL}
_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line (time RFC 3339, level, msg, plus the record's extra fields), like logrus."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs * 1000):06d}Z",
            "level": record.levelname.lower().replace("critical", "fatal"),
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STD_ATTRS:
                entry[key] = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = [f"{k}={v}" for k, v in vars(record).items() if k not in _STD_ATTRS]
        return text + (" " + " ".join(extras) if extras else "")


def flag_set() -> FlagSet:
    fs = FlagSet("gcs", "Linux guest compute service (the guest end of the hcsshim bridge protocol, version 4).",
                 "gcs [flags]")
    fs.bool("v4", "serve protocol v4 (accepted for compatibility; always on)")
    fs.string("loglevel", "debug", "log level", choices=tuple(sorted(LEVELS)))
    fs.string("log-format", "text", "log format", choices=("text", "json"))
    fs.string("logfile", "", "log to this file instead of stderr")
    fs.bool("use-inouterr", "use stdin/stdout as the bridge (logs on stderr)")
    fs.string("transport", "vsock", "how to reach the host: vsock, unix:DIR, mux:DEVICE, mux:fd=R,W")
    fs.string("root", "/run/gcs", "state directory")
    fs.string("share-root", None, "directory where the VM's shares are mounted (MappedDirectory becomes a bind "
              "mount)")
    fs.string("share-tag", None, "mount this virtio-9p tag at the share root first (the utility VM's share "
              "device)")
    fs.string("modules-ready", None, "a file init creates once it has loaded the kernel modules it loads in the "
              "background; requests that need them (9p, network, pmem) wait for it")
    fs.bool("sync-host-state", "apply the clock, entropy and hostname the host sends when it negotiates (a "
            "utility VM's GCS: a VM restored from a template needs them)")
    fs.string("cgroup-parent", "/pods", "parent cgroup of containers")
    fs.string("runc", "runc", "the runc binary")
    return fs


def parse_args(argv: list[str] | None) -> Any:
    """The flags, Go style (upstream's gcs uses Go's flag package); exits 0 for -h, 2 for a bad command line."""
    fs = flag_set()
    args, rest = fs.parse_or_exit(argv)
    if rest:
        sys.stderr.write(f"gcs: unexpected argument {rest[0]!r}\n{fs.usage()}")
        raise SystemExit(2)
    return args


def setup_logging(args: Any) -> None:
    stream = open(args.logfile, "a", buffering=1) if args.logfile else sys.stderr  # noqa: SIM115
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if args.log_format == "json"
                         else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[args.loglevel])


async def serve(args: Any) -> int:
    import asyncio

    from hcsshim.guest.containers import Guest
    from hcsshim.guest.server import Connection, Notifier
    from hcsshim.transport.base import FdConn

    transport = await _open_transport(args.transport)
    start = getattr(transport, "start", None)
    if start is not None:
        await start()
    notifier = Notifier()
    guest = Guest(args.root, transport, runc_binary=args.runc, cgroup_parent=args.cgroup_parent,
                  notify=notifier.notify)
    guest.storage.share_root = args.share_root
    if args.share_tag and not args.share_root:
        raise ValueError("-share-tag needs -share-root")
    guest.storage.share_tag = args.share_tag
    guest.modules_ready = args.modules_ready
    guest.sync_host_state = args.sync_host_state
    await guest.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("GCS started", extra={"pid": os.getpid(), "root": guest.root, "transport": args.transport})
    current: Connection | None = None

    async def bridge_loop() -> None:
        nonlocal current
        while not stop.is_set():
            if args.use_inouterr:
                conn = FdConn(0, 1, owns_fds=False)
            else:
                try:
                    conn = await transport.dial(BRIDGE_PORT, retries=0)
                except OSError:
                    await asyncio.sleep(0.1)
                    continue
            log.info("bridge connected")
            current = Connection(conn, guest, notifier, on_power_off=stop.set)
            await current.serve()
            current = None
            if args.use_inouterr:
                stop.set()

    runner = asyncio.create_task(bridge_loop(), name="bridge")
    stopper = asyncio.create_task(stop.wait(), name="stop")
    try:
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        log.info("GCS shutting down")
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        stopper.cancel()
        if current is not None:
            await current.close()
        await guest.close()
        await transport.close()
    if runner.done() and not runner.cancelled() and runner.exception() is not None:
        raise runner.exception()  # type: ignore[misc]
    return 0


DEVICE_WAIT = 30.0  # seconds a mux:DEVICE may take to appear


async def _open_transport(spec: str) -> Any:
    """open_transport, waiting for a mux:DEVICE to appear. The host names virtio-serial ports one by one after
    the driver probes them, and init links /dev/virtio-ports/NAME only for the ports it was given itself: a
    missing link is found through sysfs (what udev would have linked) and made here."""
    import asyncio

    from hcsshim.transport.base import open_transport

    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEVICE_WAIT
    while True:
        try:
            return open_transport(spec, role="guest")
        except FileNotFoundError:
            if not spec.startswith("mux:") or loop.time() > deadline:
                raise
            _link_virtio_port(spec[4:])
            await asyncio.sleep(0.02)


def _link_virtio_port(path: str) -> None:
    directory, _, name = path.rpartition("/")
    if directory != "/dev/virtio-ports":
        return
    with contextlib.suppress(OSError):
        for port in os.listdir("/sys/class/virtio-ports"):
            with open(f"/sys/class/virtio-ports/{port}/name") as f:
                if f.read().strip() == name:
                    os.makedirs(directory, exist_ok=True)
                    os.symlink(f"../{port}", path)
                    return


def main(argv: list[str] | None = None) -> int:
    # The agent never speaks TLS: without this asyncio imports ssl (and what ssl imports) on the VM's boot path.
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
    import asyncio

    args = parse_args(argv)
    setup_logging(args)
    try:
        status = asyncio.run(serve(args))
    except (OSError, ValueError) as e:
        log.error("gcs: %s", e)
        return 1
    if os.getpid() == 1:  # the VM's init: power off (spec 4.4)
        _power_off()
    return status


def _power_off() -> None:
    import ctypes

    os.sync()
    ctypes.CDLL(None, use_errno=True).reboot(0x4321FEDC)  # LINUX_REBOOT_CMD_POWER_OFF


if __name__ == "__main__":
    sys.exit(main())
