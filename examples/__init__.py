"""Example applications built on durable."""
