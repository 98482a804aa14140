"""jupyter-sandbox: a small container engine for teaching the Unix shell and containers."""
