"""AWS Trainium (Neuron) support: neuron-monitor reports, sysfs, ``NEURON_HW_ERR`` kernel-log lines.

Modules, one reason to change each:

* ``report``: pure parser of a neuron-monitor JSON report.
* ``frame``: pure assembly of wire readings from a parsed report and a sysfs snapshot.
* ``edges``: pure edge detection (previous state, current state) → events.
* ``hw_err``: pure parser of ``NEURON_HW_ERR=`` kernel-log lines, and a handler factory.
* ``sysfs``: reader of ``/sys/devices/virtual/neuron_device`` (root configurable).
* ``monitor``: the managed neuron-monitor child process.
* ``probe``: the ``neuron`` probe, its config struct and factory.
* ``device_model``, ``fake_monitor``: simulated Trainium devices and a fake neuron-monitor.
* ``cli``: ``fleetops-agent replay neuron-monitor PATH``.
"""
