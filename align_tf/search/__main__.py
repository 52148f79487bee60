# ``python -m align_tf.search``: the command line of align_tf/search/command.py. (No docstring:
# cli.run lends --help the command module's.)
from align_tf.search.command import run

run()
