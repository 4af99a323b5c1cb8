"""``python -m emscope._cli``: the `emscope` command without the console script."""

from emscope._cli.main import app

app(prog_name="emscope")
