"""Typer command functions for the evaluation commands; cli.py registers them."""
