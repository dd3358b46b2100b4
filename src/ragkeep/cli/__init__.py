"""The ``ragkeep`` command line (``ragkeep.cli.main:app``)."""
