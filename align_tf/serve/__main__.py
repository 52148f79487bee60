# ``python -m align_tf.serve``: the command line of align_tf/serve/command.py. (No docstring:
# cli.run lends --help the command module's.)
from align_tf.serve.command import run

run()
