"""The `skylane` command line (typer apps); `main.app` is the root."""
