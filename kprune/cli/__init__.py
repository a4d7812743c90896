"""The `kprune` command (`main`: demo, inspect, export), a thin layer over the library, and the demo.

May import: every subpackage.
"""
