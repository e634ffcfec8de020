"""Host RAS from the kernel log: PCIe AER, machine checks, EDAC memory errors, read-only filesystems.

Each shape has a pure parser (``aer``, ``mce``, ``edac``, ``filesystem``) and a kernel-log handler
that groups a report's lines, maps it to the device it concerns and folds repeats (``*_handler``);
``pci_topology`` reads the sysfs PCI tree that maps a PCI address to the GPU or NIC behind it.
"""
