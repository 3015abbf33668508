#!/usr/lib/hcsshim/busybox sh
# hcsshim guest init (PID 1): upstream init/init.c + vsockexec semantics in busybox sh (fast under TCG).
#
# Usage (kernel command line: ... -- [options] child argv...):
#   -e NAME   child's stderr goes to /dev/virtio-ports/NAME (vsockexec -e, with port names instead of
#             vsock ports); a numeric NAME is upstream init's entropy port and is ignored (virtio-rng
#             feeds the kernel's entropy pool directly)
#   -o NAME   child's stdout goes to /dev/virtio-ports/NAME (vsockexec -o)
#   -i NAME   child's stdin comes from /dev/virtio-ports/NAME (default /dev/null)
#   -w        writable tmpfs overlays on /etc and /var (for a read-only root file system)
# With no child argv, a shell runs on the console (debugging).
#
# Sequence: mounts, cgroups (v2 unless hcsshim.cgroup=v1 is on the kernel command line, v1 per
# controller as fallback), rlimits, lo up, the early kernel modules in the build's order,
# /dev/virtio-ports/<name> links (no udev), then the child in a new session with only PATH in its
# environment, while the other modules (9p, vsock, dm, network, pmem) load in the background; when they
# are all in, /run/hcsshim/modules.ready exists. PID 1 reaps every orphan while it waits; when the
# child exits its status goes to /dev/kmsg and the console and the VM powers off (the host runs QEMU
# with -no-reboot; if poweroff fails, init exits and panic=-1 resets).
# Stage lines "hcsshim-init: ..." go to /dev/kmsg and the console so the host can time the boot.

# This busybox is built with FEATURE_SH_STANDALONE + PREFER_APPLETS: the commands below are its own
# applets (no exec, no PATH lookup), whatever the base provides; only the child runs from PATH.
BB=/usr/lib/hcsshim/busybox
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
umask 022

mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev 2>/dev/null  # EBUSY: already mounted by the kernel
if (: >/dev/console) 2>/dev/null; then con=/dev/console; else con=/dev/null; fi
exec </dev/null >$con 2>&1

log() {  # log LEVEL MESSAGE: to the kernel log and to the console
	echo "<$1>hcsshim-init: $2" >/dev/kmsg 2>/dev/null
	echo "hcsshim-init: $2"
}

halt() {
	sync
	poweroff -f
	sleep 5
	exit "${1:-1}"  # poweroff did not happen: PID 1 exits, the kernel panics and panic=-1 resets the VM
}

die() {
	log 3 "fatal: $*"
	halt 1
}

log 6 "started"

# ---- root on a disk (root=/dev/X on the kernel command line, rootfs.vhd): the initramfs (initrd-vhd.cpio)
# only loads the storage drivers, mounts that root read-only and hands over to its /init, same arguments.
[ -e /proc/self ] || { $BB mkdir -p /proc && $BB mount -t proc -o nodev,nosuid,noexec proc /proc; }  # after a root switch: moved here
if [ "$$" = 1 ] && [ -z "$HCSSHIM_ROOT_SWITCHED" ]; then
	read -r cmdline </proc/cmdline
	root_dev=
	for t in $cmdline; do
		case $t in root=/dev/*) root_dev=${t#root=} ;; --) break ;; esac
	done
	if [ -n "$root_dev" ]; then
		# The first devtmpfs mount above can fail in this initramfs (no /dev/null for its redirection yet)
		$BB mountpoint -q /dev || $BB mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev || die "mount /dev"
		read -r kver </proc/sys/kernel/osrelease
		while read -r m; do
			$BB insmod "/lib/modules/$kver/$m" 2>/dev/null || log 4 "insmod $m failed"
		done <"/lib/modules/$kver/hcsshim.load.root"
		i=0
		while [ ! -b "$root_dev" ]; do
			[ $i -ge 6000 ] && die "root device $root_dev did not appear within 60 s"
			$BB usleep 10000
			i=$((i + 1))
		done
		$BB mkdir -p /newroot
		$BB mount -t ext4 -o ro,noload "$root_dev" /newroot || die "mount root $root_dev"
		[ -x /newroot/init ] || die "root $root_dev has no /init"
		$BB mount --move /dev /newroot/dev || die "move /dev to the new root"
		$BB mount --move /proc /newroot/proc || die "move /proc to the new root"
		log 6 "switching to root $root_dev"
		export HCSSHIM_ROOT_SWITCHED=1
		exec $BB switch_root /newroot /init "$@"
	fi
fi

err_port= out_port= in_port= writable=
while getopts "e:o:i:w" opt; do
	case $opt in
	e) case $OPTARG in *[!0-9]*) err_port=$OPTARG ;; *) ;; esac ;;
	o) out_port=$OPTARG ;;
	i) in_port=$OPTARG ;;
	w) writable=1 ;;
	*) die "usage: init [-e port] [-o port] [-i port] [-w] [child argv...]" ;;
	esac
done
shift $((OPTIND - 1))

# ---- file systems
mkdir -p /sys /run /tmp /dev/pts /dev/shm
[ -e /proc/self ] || die "mount /proc"
for fd in fd:/proc/self/fd stdin:/proc/self/fd/0 stdout:/proc/self/fd/1 stderr:/proc/self/fd/2; do
	ln -sfn "${fd#*:}" "/dev/${fd%%:*}"
done
mount -t tmpfs -o nodev,nosuid,mode=0755 tmpfs /run || die "mount /run"
mount -t tmpfs -o nodev,nosuid,mode=1777 tmpfs /tmp || die "mount /tmp"
mount -t tmpfs -o nodev,nosuid,noexec,mode=1777 shm /dev/shm || die "mount /dev/shm"
mount -t devpts -o nosuid,noexec,newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts || die "mount /dev/pts"
ln -sfn pts/ptmx /dev/ptmx
mount -t sysfs -o nodev,nosuid,noexec sysfs /sys || die "mount /sys"

# ---- cgroups
cgroup_v1() {
	mount -t tmpfs -o nodev,nosuid,noexec,mode=0755 cgroup /sys/fs/cgroup || die "mount /sys/fs/cgroup"
	n=0
	while read -r name _hier _num enabled; do
		case $name in '#'*) continue ;; esac
		[ "$enabled" = 1 ] || continue
		mkdir -p "/sys/fs/cgroup/$name"
		mount -t cgroup -o "nodev,nosuid,noexec,$name" cgroup "/sys/fs/cgroup/$name" && n=$((n + 1))
	done </proc/cgroups
	[ $n -gt 0 ] || die "cgroup v1: no controller could be mounted"
	cgroups="v1 ($n controllers)"
}
read -r cmdline </proc/cmdline
case " $cmdline " in
*" hcsshim.cgroup=v1 "*) cgroup_v1 ;;
*)
	if mount -t cgroup2 -o nodev,nosuid,noexec,nsdelegate cgroup2 /sys/fs/cgroup 2>/dev/null &&
		[ -e /sys/fs/cgroup/cgroup.controllers ]; then
		read -r controllers </sys/fs/cgroup/cgroup.controllers
		for c in $controllers; do echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; done
		cgroups="v2 ($controllers)"
	else
		umount /sys/fs/cgroup 2>/dev/null
		cgroup_v1
	fi
	;;
esac

# ---- limits and loopback
ulimit -H -n 1048576 2>/dev/null
ulimit -S -n 1024 2>/dev/null
ip link set lo up 2>/dev/null || ifconfig lo up 2>/dev/null || log 4 "could not bring up lo"

# ---- kernel modules: the build lists them dependencies first; hcsshim.load before the child starts,
# hcsshim.load.later in the background after (then /run/hcsshim/modules.ready exists)
read -r kver </proc/sys/kernel/osrelease
moddir=/lib/modules/$kver
load_modules() {  # load_modules LISTFILE: prints nothing, sets nmod
	nmod=0
	[ -f "$1" ] || return 0
	while read -r m; do
		if insmod "$moddir/$m" 2>/dev/null; then
			nmod=$((nmod + 1))
		elif [ -z "$HCSSHIM_ROOT_SWITCHED" ] || [ ! -d "/sys/module/$(basename "$m" .ko | tr - _)" ]; then
			log 4 "insmod $m failed"  # after a root switch, the initramfs loaded the root's drivers already
		fi
	done <"$1"
}
load_modules "$moddir/hcsshim.load"
log 6 "mounted; cgroup $cgroups; $nmod modules loaded"

# ---- writable overlays for a read-only root
if [ -n "$writable" ]; then
	mkdir -p /run/over
	mount -t tmpfs -o size=40% tmpfs /run/over || die "mount /run/over"
	for d in etc var; do
		mkdir -p "/run/over/$d/upper" "/run/over/$d/work"
		mount -t overlay -o "lowerdir=/$d,upperdir=/run/over/$d/upper,workdir=/run/over/$d/work" \
			overlay "/$d" || die "overlay on /$d"
	done
fi

# ---- virtio-serial port names -> /dev/virtio-ports/<name>
link_ports() {  # links every named port; sets pending to how many ports have no name yet
	pending=0
	for d in /sys/class/virtio-ports/*; do
		[ -e "$d/name" ] || continue
		name=
		read -r name <"$d/name" 2>/dev/null
		if [ -n "$name" ]; then
			[ -e "/dev/virtio-ports/$name" ] || ln -sfn "../${d##*/}" "/dev/virtio-ports/$name"
		else
			pending=$((pending + 1))
		fi
	done
}
mkdir -p /dev/virtio-ports
i=0
while :; do  # port names arrive from the host shortly after the driver probes: wait up to 5 s
	link_ports
	missing=
	for p in $err_port $out_port $in_port; do [ -e "/dev/virtio-ports/$p" ] || missing="$missing $p"; done
	[ -z "$missing" ] && [ $pending -eq 0 ] && break
	if [ $i -ge 500 ]; then
		[ -n "$missing" ] && die "virtio-serial port(s)$missing not found"
		break
	fi
	usleep 10000
	i=$((i + 1))
done

# ---- the child
if [ $# -eq 0 ]; then
	log 4 "no child command: starting a shell on the console"
	set -- /bin/sh
	in=$con
fi
in=${in:-/dev/null}
[ -n "$in_port" ] && in=/dev/virtio-ports/$in_port
out=$con
[ -n "$out_port" ] && out=/dev/virtio-ports/$out_port
# A virtio port can be open only once: the same port for stdout and stderr is one descriptor, dup'ed.
if [ -n "$err_port" ] && [ "$err_port" = "$out_port" ]; then
	env -i "PATH=$PATH" $BB setsid "$@" <"$in" >"$out" 2>&1 &
elif [ -n "$err_port" ]; then
	env -i "PATH=$PATH" $BB setsid "$@" <"$in" >"$out" 2>"/dev/virtio-ports/$err_port" &
else
	env -i "PATH=$PATH" $BB setsid "$@" <"$in" >"$out" 2>$con &
fi
child=$!
log 6 "child started pid=$child: $*"
mkdir -p /run/hcsshim
(
	load_modules "$moddir/hcsshim.load.later"
	: >/run/hcsshim/modules.ready
	log 6 "$nmod more modules loaded"
) &
renice -n 19 -p $! >/dev/null 2>&1  # the child's start comes first

# PID 1 has no signal handlers, so the kernel drops signals sent to it; `wait` reaps every exiting child
# (orphans included) and returns when ours is gone.
while :; do
	wait $child
	status=$?
	kill -0 $child 2>/dev/null || break
done
if [ $status -gt 128 ]; then what="killed by signal $((status - 128))"; else what="exited with status $status"; fi
log 5 "child pid=$child $what; powering off"
halt $status
