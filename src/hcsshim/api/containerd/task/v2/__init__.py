"""The runtime v2 shim service containerd.task.v2.Task and its messages."""
