"""The application layer: the CLI (``app.cli``), the build pipeline (``app.pipeline``) and reports (``app.reports``).

The only place that knows all three packages: it drives the core (``mobilelwt``), the runtime adapters
(``targets``) and the benches (``device_bench``); nothing below imports it (import-linter checks the layers).
"""
