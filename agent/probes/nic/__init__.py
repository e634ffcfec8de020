"""NICs, InfiniBand, RoCE and EFA ports from sysfs: the port state and counters of every RDMA
device (``/sys/class/infiniband``), the carrier of its network interface (``/sys/class/net``), and
where it sits on the PCIe tree relative to the node's GPUs."""
