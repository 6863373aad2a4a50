"""Which class a node belongs to: the first whose selector (and cloud groups) match.

A node's class depends only on the values of the label keys that some selector mentions (and on
its cloud group when some class selects by groups), so the answer is memoized on those values:
100,000 nodes in 10 classes cost one tuple and one dict lookup each instead of up to 10 selector
evaluations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from noderescue.core.model import NodeClass, NodeView


class ClassIndex:
    def __init__(self, classes: Sequence[NodeClass]) -> None:
        keys: set[str] = set()
        for cls in classes:
            keys.update(k for k, _ in cls.selector.match_labels)
            keys.update(req.key for req in cls.selector.match_expressions)
        self._classes = tuple(classes)
        self._keys = tuple(sorted(keys))
        self._by_group = any(cls.groups for cls in classes)
        self._memo: dict[tuple[str | None, ...], NodeClass | None] = {}

    def lookup(self, labels: Mapping[str, str], group: str | None = None) -> NodeClass | None:
        key = tuple([labels.get(k) for k in self._keys])
        if self._by_group:
            key += (group,)
        try:
            return self._memo[key]
        except KeyError:
            pass
        found = next((c for c in self._classes if c.selects(labels, group)), None)
        self._memo[key] = found
        return found

    def lookup_node(self, node: NodeView) -> NodeClass | None:
        return self.lookup(node.labels, node.group)
