"""The tar2ext4 command: upstream's flags (Go `flag` syntax) plus --verity, --root-digest, --max-disk-size.

Exit codes (as upstream): 0 success; 1 a conversion error (one line on stderr, no output file left behind)
or a usage error (extra argument, missing -o); 2 an unknown or malformed flag. `-h`/`--help` prints the usage
and exits 0.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from collections.abc import Callable

USAGE = """Usage of tar2ext4:
  -convert-slash
    \tConvert backslashes ('\\') in path names to slashes ('/')
  -i string
    \tinput file: a tar, or a directory to copy like mkfs.ext4 -d (default: standard input)
  -inline
    \twrite small file data into the inode; not compatible with DAX
  -o string
    \toutput file (required)
  -only-vhd
    \tcopy the input to the output unchanged and append a VHD footer (all other flags are ignored)
  -overlay
    \tproduce overlayfs-compatible layer image (OCI whiteouts become overlay whiteouts)
  -vhd
    \tadd a VHD footer to the end of the image

Extensions (not in upstream's CLI; upstream offers them as library options):
  -verity
    \tappend the dm-verity superblock and hash tree after the ext4 data and print the root hash
  -root-digest
    \tprint the dm-verity root hash of the image upstream's ConvertAndComputeRootDigest makes
    \t(-overlay, 128 GiB maximum size); -o is optional and then receives that image
  -max-disk-size bytes
    \tmaximum disk size (default 16 GiB; also sets the reserved descriptor space)
  -upstream-bitmap-padding
    \tleave the inode-bitmap padding bits clear, byte-identical to upstream (e2fsck then reports it)
  -progress
    \tshow a progress bar (default: when stderr is a terminal)
"""

_BOOLS = {"convert-slash", "inline", "only-vhd", "overlay", "vhd", "verity", "root-digest",
          "upstream-bitmap-padding", "progress"}
_STRINGS = {"i", "o", "max-disk-size"}
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


class _UsageError(Exception):
    def __init__(self, msg: str, code: int) -> None:
        super().__init__(msg)
        self.code = code


def parse_args(argv: list[str]) -> tuple[dict[str, object], list[str]]:
    """Go `flag` parsing: -flag, --flag, -flag=value, bools take only the =value form."""
    vals: dict[str, object] = {"i": "", "o": "", "max-disk-size": "0"}
    args = list(argv)
    while args:
        a = args[0]
        if len(a) < 2 or a[0] != "-":
            break
        if a == "--":
            args.pop(0)
            break
        args.pop(0)
        name = a[2:] if a.startswith("--") else a[1:]
        if not name or name[0] in "-=":
            raise _UsageError(f"bad flag syntax: {a}", 2)
        value: str | None = None
        if "=" in name:
            name, value = name.split("=", 1)
        if name in ("h", "help") and name not in _BOOLS:
            raise _UsageError("", 0)
        if name in _BOOLS:
            if value is None or value in _TRUE:
                vals[name] = True
            elif value in _FALSE:
                vals[name] = False
            else:
                raise _UsageError(f'invalid boolean value "{value}" for -{name}: parse error', 2)
        elif name in _STRINGS:
            if value is None:
                if not args:
                    raise _UsageError(f"flag needs an argument: -{name}", 2)
                value = args.pop(0)
            vals[name] = value
        else:
            raise _UsageError(f"flag provided but not defined: -{name}", 2)
    return vals, args


def _progress(total: int | None, enabled: bool, delay: float) -> tuple[Callable[[int], None] | None,
                                                                        Callable[[], None]]:
    """A tqdm bar on stderr fed with input bytes read; with a delay it only appears for long conversions."""
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="tar2ext4", delay=delay,
               file=sys.stderr, leave=False)
    last = [0]

    def update(n: int) -> None:
        if n > last[0]:
            bar.update(n - last[0])
            last[0] = n

    return update, bar.close


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        vals, rest = parse_args(argv)
    except _UsageError as exc:
        if exc.code == 0:
            sys.stdout.write(USAGE)
            return 0
        sys.stderr.write(f"{exc}\n{USAGE}")
        return exc.code
    root_digest = bool(vals.get("root-digest"))
    if rest or (not vals["o"] and not root_digest):
        sys.stderr.write(USAGE)
        return 1
    try:
        max_size = int(str(vals["max-disk-size"]), 0)
    except ValueError:
        sys.stderr.write(f'invalid value "{vals["max-disk-size"]}" for flag -max-disk-size: parse error\n{USAGE}')
        return 2

    from hcsshim import ext4

    opts = ext4.Options(
        convert_whiteout=bool(vals.get("overlay")), convert_backslash=bool(vals.get("convert-slash")),
        inline_data=bool(vals.get("inline")), append_vhd_footer=bool(vals.get("vhd")),
        only_append_vhd_footer=bool(vals.get("only-vhd")), append_dm_verity=bool(vals.get("verity")),
        max_disk_size=max_size, upstream_bitmap_padding=bool(vals.get("upstream-bitmap-padding")))
    src: str | int = str(vals["i"]) if vals["i"] else 0
    total = None
    try:
        st = os.stat(src) if isinstance(src, str) else os.fstat(0)
        if st.st_size and not os.path.isdir(src if isinstance(src, str) else "/nonexistent"):
            total = st.st_size
    except OSError:
        pass
    # The conversion makes tens of thousands of long-lived objects and no garbage cycles: the cyclic
    # collector would only rescan them (about 5% of the run time).
    gc.disable()
    show = vals.get("progress")
    update, done = _progress(total, sys.stderr.isatty() if show is None else bool(show), 0.5 if show is None else 0)
    # SIGTERM ends the conversion like ^C: the partial output is removed on the way out.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if root_digest:
            if vals["o"]:
                opts.convert_whiteout = True
                opts.max_disk_size = ext4.ROOT_DIGEST_MAX_DISK_SIZE
                opts.upstream_bitmap_padding = True
                opts.append_dm_verity = opts.append_vhd_footer = opts.inline_data = False
                opts.only_append_vhd_footer = False
                res = ext4.convert(src, str(vals["o"]), opts, update)
                from hcsshim.ext4 import verity

                fd = os.open(str(vals["o"]), os.O_RDONLY)
                try:
                    digest = verity.root_hash(verity.hash_levels(fd, res.ext4_size))
                finally:
                    os.close(fd)
            else:
                digest = ext4.compute_root_digest(src, update)
            done()
            sys.stdout.write(digest + "\n")
            return 0
        res = ext4.convert(src, str(vals["o"]), opts, update)
        done()
        if res.root_hash is not None:
            sys.stdout.write(res.root_hash + "\n")
        return 0
    except ext4.Ext4Error as exc:
        done()
        sys.stderr.write(f"{exc}\n")
        return 1
    except OSError as exc:
        done()
        what = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
        sys.stderr.write(f"tar2ext4: convert {vals['i'] or 'stdin'} to {vals['o']}: {what}\n")
        return 1
    except KeyboardInterrupt:
        done()
        return 130


if __name__ == "__main__":
    sys.exit(main())
