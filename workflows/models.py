"""Workflows, actions and runs: the models arrive with the execution issue."""

from __future__ import annotations
