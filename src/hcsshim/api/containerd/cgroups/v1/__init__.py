"""cgroup v1 metrics (io.containerd.cgroups.v1.Metrics), the Stats answer for Linux tasks."""
