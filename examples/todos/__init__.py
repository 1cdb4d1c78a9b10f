"""The TinyBase todo backend on durable (see app.py and README.md)."""
