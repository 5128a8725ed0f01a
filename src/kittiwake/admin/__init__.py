"""Administration: the ``kittiwake`` command line (later: control socket, HTTP API, metrics).

The one place besides ``app`` allowed to import every other package.
"""
