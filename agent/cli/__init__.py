"""The agent's operator subcommands other than ``run``: ``probe`` and ``replay`` (``simulate``
lives with the simulation in ``agent.sim.command``)."""
