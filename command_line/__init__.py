"""The insides of ``cli.py``, the command-line client of the image service."""
