"""The apr stand-in: see :mod:`standins.apr.cli`."""
