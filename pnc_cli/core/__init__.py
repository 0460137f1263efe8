"""Layer core: errors and exit codes, config dataclasses, progress, device, version (stdlib and torch
only)."""
