# ``python -m align_tf.export``: the command line of align_tf/export/__init__.py. (No docstring:
# absl's --help then shows the package's.)
from align_tf.export import run

run()
