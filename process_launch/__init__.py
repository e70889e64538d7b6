"""The insides of ``launcher.py``: what ``make run`` starts, and how it stops it."""
