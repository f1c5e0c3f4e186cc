"""Read a model's structure: torch.fx where it traces, module-tree walking where it does not.

The tracer keeps norms and weight layers whole (timm's norm subclasses would otherwise be
traced into ``F.batch_norm`` calls). When the whole model does not trace (control flow on
tensors, list inputs), each child is traced on its own, down the tree, so the graph still
covers every part that can be traced; the rest is walked as a module tree.
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import describe
from ..nn.alteration import alterable
from .builtin_rules import is_default_alteration_target
from .rules import leaf_types

_ADDS = {operator.add, operator.iadd, torch.add}
_NORM_FUNCTIONS = {
    F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm, torch.batch_norm, torch.layer_norm, torch.group_norm,
} | ({F.rms_norm} if hasattr(F, "rms_norm") else set())


@dataclass
class Analysis:
    """fx graphs keyed by the module path they were traced from ('' is the whole model), and
    the modules that could not be traced (kept opaque inside their parent's graph), with why."""

    graphs: dict[str, fx.Graph] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        if "" in self.graphs:
            return "fx" if not self.failures else f"fx ({len(self.failures)} opaque modules walked)"
        return "fx per submodule" if self.graphs else "module walk"


class _LeafTracer(fx.Tracer):
    def __init__(self):
        super().__init__()
        self.leaves = leaf_types()
        self.opaque: set[int] = set()  # ids of modules that failed to trace: kept as single calls

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return (
            id(module) in self.opaque
            or isinstance(module, self.leaves)
            or super().is_leaf_module(module, qualified_name)
        )


_CONTAINERS = (nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)


def analyze(model: nn.Module) -> Analysis:
    """Trace ``model`` with torch.fx. A module that does not trace is traced child by child; the
    children that still fail become opaque calls and the module is traced again around them,
    so only the smallest untraceable modules are left to the module-tree walk."""
    analysis = Analysis()
    tracer = _LeafTracer()

    def trace(module: nn.Module, path: str) -> str | None:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                analysis.graphs[path] = tracer.trace(module)
            return None
        except Exception as err:  # any failure to trace means: look inside, or walk the tree here
            return describe(err)[:160]

    def visit(module: nn.Module, path: str) -> bool:
        """Trace ``module``; True when some descendant had to be made opaque."""
        error = None if isinstance(module, _CONTAINERS) else trace(module, path)
        if error is None and not isinstance(module, _CONTAINERS):
            return False
        opaque_below = False
        for name, child in module.named_children():
            if not isinstance(child, tracer.leaves) and any(True for _ in child.children()):
                opaque_below |= visit(child, f"{path}.{name}" if path else name)
        if isinstance(module, _CONTAINERS):
            return opaque_below
        if opaque_below and trace(module, path) is None:
            prefix = f"{path}." if path else ""
            for inner in [p for p in analysis.graphs if p.startswith(prefix) and p != path]:
                if not any(inner.startswith(f"{o}.") for o in analysis.failures):
                    del analysis.graphs[inner]  # covered by this module's graph
            return True
        analysis.failures[path] = error
        tracer.opaque.add(id(module))
        return True

    visit(model, "")
    return analysis


def _module_path(node: fx.Node) -> str:
    """The innermost module whose forward created ``node`` ('' for the traced root)."""
    stack = node.meta.get("nn_module_stack") or {}
    if node.op == "call_module":
        return str(node.target)
    return next(reversed(stack.values()))[0] if stack else ""


def _inside(node: fx.Node, owner: str) -> bool:
    if node.op in ("placeholder", "get_attr", "output"):
        return False
    path = _module_path(node)
    return owner == "" or path == owner or path.startswith(owner + ".")


def _upstream(node: fx.Node, owner: str) -> tuple[set[fx.Node], set[fx.Node]]:
    """Nodes inside ``owner`` that ``node`` depends on, and the outside nodes feeding them."""
    inside, frontier, todo = set(), set(), [node]
    while todo:
        current = todo.pop()
        if current.op == "get_attr":
            continue
        if not _inside(current, owner):
            frontier.add(current)
            continue
        if current not in inside:
            inside.add(current)
            todo.extend(current.all_input_nodes)
    return inside, frontier


def residual_entry_layers(analysis: Analysis, model: nn.Module) -> list[str]:
    """The first weight layer on the main branch of every residual connection.

    A residual connection is an addition, inside some module, of two branches fed by the same
    input; the branch with more weight layers is the main one. This is the paper's placement
    (the input of each residual block's first convolution), found without naming block classes.
    """
    found: dict[str, None] = {}
    for root, graph in analysis.graphs.items():
        base = model.get_submodule(root) if root else model
        order = {node: i for i, node in enumerate(graph.nodes)}

        def weight_layers(nodes: set[fx.Node], base: nn.Module = base) -> set[fx.Node]:
            return {n for n in nodes if n.op == "call_module" and _entry_layer(base, str(n.target))}

        for node in graph.nodes:
            is_add = (node.op == "call_function" and node.target in _ADDS) or (
                node.op == "call_method" and node.target in ("add", "add_")
            )
            operands = [a for a in node.args[:2] if isinstance(a, fx.Node)]
            if not is_add or len(operands) != 2:
                continue
            owner = _module_path(node)
            (in_a, from_a), (in_b, from_b) = (_upstream(o, owner) for o in operands)
            if not (from_a & from_b):
                continue
            layers_a, layers_b = weight_layers(in_a), weight_layers(in_b)
            main, shortcut = (layers_a, layers_b) if len(layers_a) > len(layers_b) else (layers_b, layers_a)
            if len(main) <= len(shortcut):
                continue
            first = _entry_layer(base, str(min(main - shortcut, key=order.__getitem__).target))
            found[f"{root}.{first}" if root else first] = None
    return list(found)


def _entry_layer(base: nn.Module, path: str) -> str | None:
    """``path`` if it is a weight layer; for an opaque (untraced) module, its first default
    alteration target in registration order; otherwise None."""
    module = base.get_submodule(path)
    if not alterable(module):
        return path
    if isinstance(module, leaf_types()):
        return None
    inner = [(f"{path}.{n}", m) for n, m in module.named_modules() if n and not alterable(m)]
    preferred = [p for p, m in inner if is_default_alteration_target(p, m)]
    return (preferred or [p for p, _ in inner] or [None])[0]


def functional_norm_calls(analysis: Analysis) -> dict[str, str]:
    """Norm functions called outside norm modules: owning module path -> function name."""
    calls: dict[str, str] = {}
    for root, graph in analysis.graphs.items():
        for node in graph.nodes:
            if node.op == "call_function" and node.target in _NORM_FUNCTIONS:
                owner = _module_path(node)
                path = f"{root}.{owner}".strip(".") if owner else root
                calls[path] = getattr(node.target, "__name__", str(node.target))
    return calls
