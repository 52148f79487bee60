"""The package's modules import each other one way (config → data → model → objective → trainer →
export): no cycle, counting imports inside functions too, and export imports no evaluation or
training code."""

import ast
import os

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "align_tf")


def _module_graph() -> dict:
    """``{module: {imported align_tf modules}}`` over every ``import`` in the package."""
    modules = {}
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                modules[rel.removesuffix(".__init__")] = path
    graph = {}
    for module, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            deps |= {n for n in names if n in modules and n != module}
        graph[module] = deps
    return graph


def _cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle():
    graph = _module_graph()
    assert "align_tf.objectives.momentum" in graph
    cycle = _cycle(graph)
    assert cycle is None, " → ".join(cycle)


def test_lower_layers_do_not_import_higher_ones():
    graph = _module_graph()

    def reach(module):
        seen, todo = set(), [module]
        while todo:
            for dep in graph[todo.pop()] - seen:
                seen.add(dep)
                todo.append(dep)
        return seen

    def under(prefix):
        return [m for m in graph if m == prefix or m.startswith(prefix + ".")]

    for model_module in under("align_tf.models"):
        assert not any(m.startswith(("align_tf.objectives", "align_tf.trainer", "align_tf.evaluation"))
                       for m in reach(model_module)), model_module
    assert not any(m.startswith(("align_tf.evaluation", "align_tf.trainer", "align_tf.objectives"))
                   for m in reach("align_tf.export"))


def test_import_align_tf_does_not_import_tensorflow():
    """``python -m align_tf.X --help`` and TF-free consumers start without loading TensorFlow."""
    import subprocess
    import sys
    code = "import sys, align_tf; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('tensorflow', 'keras')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
