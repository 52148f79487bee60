"""Training checkpoints: what one holds, which one to resume from, and restoring it.

* ``checkpoint_for``: model, optimizer and the objective's state, under the keys every run writes;
* ``choose_checkpoint``: the newest checkpoint of a run directory that reads back whole
  (``verify_checkpoint``), the same on every worker;
* ``restore``: restores it, checking both directions (every variable gets a value, every entry
  goes to a variable). Checkpoints laid out as older trainers wrote them are read through
  ``align_tf.migrate.checkpoint_view``.
"""

from __future__ import annotations

import logging

import tensorflow as tf

from align_tf import compat, distribute, migrate, objectives
from align_tf.errors import ConfigError
from align_tf.run_dir import RunDir

log = logging.getLogger(__name__)


def checkpoint_for(objective: objectives.Objective) -> tf.train.Checkpoint:
    """What a training checkpoint holds: model, optimizer and the objective's state."""
    return tf.train.Checkpoint(model=objective.model, optimizer=objective.optimizer,
                               objective=objective.state)


def restore(objective: objectives.Objective, path: str,
            strategy: tf.distribute.Strategy | None = None) -> None:
    """Restores a training checkpoint, also one written before the objectives split (the skip
    counters, momentum towers and queue were then variables of the model).

    Pass the checkpoint ``choose_checkpoint`` verified. Any failure is a one-line ``ConfigError``;
    with ``strategy``, every worker calls this together and all of them raise if any one fails
    (the file changed since it was verified, or this host reads other bytes than the chief): no
    worker trains on half-restored variables or waits in a collective for one that stopped.
    """
    problem = None
    try:
        _restore(objective, path)
    except ConfigError as e:
        problem = str(e)
    except _CHECKPOINT_DAMAGE as e:
        problem = f"cannot restore {path}: {_first_line(e)}"
    if strategy is not None and distribute.any_worker(strategy, problem is not None):
        problem = problem or f"restoring {path} failed on another worker (see its log)"
    if problem:
        raise ConfigError(problem)


def _restore(objective, path):
    """Restores ``path`` into ``objective``, checking both directions: every variable of the
    objective gets a value, and every value in the checkpoint goes to a variable.

    The second direction matters because Keras 3 keys optimizer slots by position
    (``optimizer/_variables/N``): with a variable gone from the middle of the model, its Adam
    moments would load onto the next variable without a shape error. No entry is exempt: resuming
    a run of each objective (contrastive, momentum distillation, sigmoid, ALBEF) and checkpoints
    written before the objectives split (``migrate.checkpoint_view``, by the old trainer) uses every
    entry; ``save_counter`` is matched by the restore itself and ``_CHECKPOINTABLE_OBJECT_GRAPH``
    is metadata, not an entry of any object.
    """
    keys = {name for name, _ in tf.train.list_variables(path)}
    if not any(k.startswith("optimizer/") for k in keys):
        raise ConfigError(f"{path} holds model weights only (a converted checkpoint?), not a "
                          "training state to resume; train in a new --model_dir")
    older = migrate.checkpoint_view(objective, keys)  # (checkpoint, note) for an old layout
    checkpoint, written = older or (checkpoint_for(objective), "")
    mismatch = f"{path} {written}does not match this config (objective.name=" \
        f"{getattr(objective, 'name', '') or type(objective).__name__!r}): "
    status = None
    try:
        status = checkpoint.restore(path)
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:  # ValueError: a variable of another shape
        if status is not None:
            status.expect_partial()  # the error says it; no "could not be found" warnings at exit
        raise ConfigError(mismatch + _first_line(e)) from None
    unused = _unused_checkpoint_entries(checkpoint, path)
    if unused:
        status.expect_partial()  # the error says it; no "unrestored values" warnings at exit
        more = f" (and {len(unused) - 1} more)" if len(unused) > 1 else ""
        raise ConfigError(f"{mismatch}checkpoint entry {unused[0]}{more} is not used by any "
                          "variable of this config")


def _unused_checkpoint_entries(checkpoint: tf.train.Checkpoint, path: str) -> list:
    """The keys of checkpoint ``path`` that no object of ``checkpoint`` takes, sorted (so a model
    variable is named before the optimizer slots that shifted with it).

    Objects are matched by name along any path of the object graph, as ``restore`` matches them.
    So an entry can also land on another variable: were ``model/b`` gone, the checkpoint's
    ``b`` would reach ``c`` through the optimizer's list of variables, and two entries would
    restore into ``c``. Of two entries that share an object, the one whose key is not the
    object's own path (its first path, as a save names it) is counted as unused.
    """
    matched = tf.train.CheckpointView(path).match(checkpoint)
    graph = compat.trackable_object_graph(
        tf.train.load_checkpoint(path).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    nodes_of = {}  # id(object) -> the checkpoint nodes with values matched to it
    for node_id, obj in matched.items():
        if graph.nodes[node_id].attributes:
            nodes_of.setdefault(id(obj), []).append(node_id)
    shared = {node_id for ids in nodes_of.values() if len(ids) > 1 for node_id in ids}
    own_path = _object_paths(checkpoint) if shared else {}
    unused = []
    for node_id, node in enumerate(graph.nodes):
        keys = [attribute.checkpoint_key for attribute in node.attributes]
        if node_id not in matched:
            unused += keys
        elif node_id in shared and own_path.get(id(matched[node_id])) != \
                keys[0].split("/.ATTRIBUTES/")[0]:
            unused += keys
    return sorted(unused)


def _object_paths(root) -> dict:
    """``{id(object): path}``: each object's first path from ``root`` breadth first, escaped as
    checkpoint keys spell it (the prefix of its ``/.ATTRIBUTES/...`` keys)."""
    view = tf.train.TrackableView(root)
    paths, queue = {id(root): ""}, [root]
    for obj in queue:  # grows while it is read: a breadth-first walk
        for name, child in view.children(obj).items():
            if id(child) not in paths:
                name = name.replace(".", "..").replace("/", ".S")  # TF's escape_local_name
                paths[id(child)] = f"{paths[id(obj)]}/{name}" if paths[id(obj)] else name
                queue.append(child)
    return paths


# What a damaged checkpoint raises when read: truncated data files give IndexError, checksum
# mismatches DataLossError, missing or mangled files NotFoundError / other OpErrors.
_CHECKPOINT_DAMAGE = (tf.errors.OpError, IndexError, OSError)
# choose_checkpoint's broadcast codes besides a checkpoint number: a fresh run, nothing readable.
_NO_CHECKPOINT, _NONE_READABLE = -1, -2


def _first_line(error: BaseException) -> str:
    """An exception's first line, without TF's ``{{function_node ...}}`` prefix, cut at 200."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    if line.startswith("{{") and "}}" in line:
        line = line.split("}}", 1)[1].strip()
    return line[:200]


def _checkpoint_number(path: str) -> int:
    """The N of a ``CheckpointManager`` checkpoint ``.../ckpt-N``; -1 for other names."""
    suffix = path.rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else -1


def checkpoint_candidates(run: RunDir) -> list:
    """The run's checkpoints, newest first: those its ``checkpoint`` state file lists and any other
    ``ckpt-N.index`` in the directory, so that a lost or damaged state file does not look like a
    fresh run."""
    try:
        state = tf.train.get_checkpoint_state(run.checkpoint_dir)
    except ValueError:  # a state file without model_checkpoint_path
        state = None
    paths = list(state.all_model_checkpoint_paths) + [state.model_checkpoint_path] if state else []
    paths += [p[:-len(".index")] for p in tf.io.gfile.glob(f"{run.checkpoint_dir}/*.index")]
    return sorted({p for p in paths if _checkpoint_number(p) >= 0}, key=_checkpoint_number,
                  reverse=True)


def verify_checkpoint(path: str) -> str | None:
    """``None`` if every tensor of checkpoint ``path`` reads back (the reader checks each one's
    CRC32C), else the first line of what went wrong. Touches no variable."""
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except _CHECKPOINT_DAMAGE as e:
        return _first_line(e)
    return None


def choose_checkpoint(run: RunDir, strategy: tf.distribute.Strategy) -> str | None:
    """The checkpoint to resume from: the newest one of ``run`` that reads back whole, the same on
    every worker; ``None`` for a fresh run. Every worker calls this at the same point.

    A damaged checkpoint (truncated, checksum mismatch, missing file) is skipped with a warning
    naming it. With several workers the chief alone reads the candidates and broadcasts its
    choice: were each worker to walk the list itself, a file damaged only as one host sees it
    (a stale cache, a partial copy) would send that worker to an older checkpoint than the others,
    and the workers would train on from different weights and batches without an error. A worker
    that then cannot read the chief's choice stops all of them in ``restore``.

    Raises:
      ConfigError: checkpoints exist but none reads back; starting afresh would overwrite them.
    """
    candidates = checkpoint_candidates(run)
    chosen = _NO_CHECKPOINT
    if distribute.is_chief(strategy):
        for path in candidates:
            problem = verify_checkpoint(path)
            if problem is None:
                chosen = _checkpoint_number(path)
                break
            log.warning("Checkpoint %s is damaged (%s); trying an older one.", path, problem)
        else:
            chosen = _NONE_READABLE if candidates else _NO_CHECKPOINT
    chosen = distribute.chief_value(strategy, chosen)
    if chosen == _NONE_READABLE:
        raise ConfigError(f"no checkpoint in {run.checkpoint_dir} can be read (newest: "
                          f"{candidates[0] if candidates else '?'}; see the warnings); restore "
                          "the files, or move them away to train from scratch")
    if chosen == _NO_CHECKPOINT:
        return None
    # A worker that lacks the file gets a path that fails in restore(), which stops every worker.
    return next((p for p in candidates if _checkpoint_number(p) == chosen),
                f"{run.checkpoint_dir}/ckpt-{chosen}")
