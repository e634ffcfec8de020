"""The ``fleetops`` command line: one API client (``client``), one module per command group
(``tasks``, ``nodes``, ``ops``, ``token``) and the entry point that builds the argparse tree
(``main``)."""

__all__: list[str] = []
