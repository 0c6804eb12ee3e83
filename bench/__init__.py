"""The performance suite: ``python -m bench`` (see BENCHMARKS.md and ``bench/__main__.py``).

Every figure is measured against the project's own provider emulator on loopback, side by
side with its baseline in the same run, because absolute times drift on a shared machine.
"""
