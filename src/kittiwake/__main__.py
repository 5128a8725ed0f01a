"""``python -m kittiwake``: the same command line as the ``kittiwake`` script."""

from kittiwake.admin.cli import main

if __name__ == "__main__":
    main(prog_name="kittiwake")
