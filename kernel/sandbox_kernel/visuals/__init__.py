"""Pictures of the machinery: the layer stack, a cell's diff, a cell's cgroup usage.

- `models`: the data (dataclasses, ``to_json``: the payloads of our MIME types);
- `html`: static HTML and plain-text renderers of the models;
- `diagram`: the overlay mount as a graphviz SVG;
- `bundles`: the display_data bundles, and the daemon queries behind them;
- `meter`: the live usage meter of a running cell (an ipywidget) and its sampler;
- `panel`: the comm of JupyterLab's "Sandbox" side panel.
"""
