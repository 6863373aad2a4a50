"""YAML loading that remembers where every key and list item was, for error messages.

PyYAML's plain ``safe_load`` throws the positions away. We compose the node graph once, walk it
to record the line of every mapping key and sequence item (by path, e.g.
``("nodeClasses", 2, "ladder", 0)``), then construct the Python data from the same graph.
The walk also catches duplicate keys, which PyYAML silently resolves as "last one wins".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from noderescue.config_errors import ConfigError, ConfigIssue

YamlPath = tuple[str | int, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_BOOL_TAG = "tag:yaml.org,2002:bool"


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false (any case) are booleans.

    YAML 1.1 also reads yes/no/on/off as booleans, which silently turns label values such as
    `country: NO` or `power: on` into something else. Sexagesimal numbers (2:00 -> 120) stay, so
    that times can be refused with a hint instead of being guessed.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def format_path(path: YamlPath) -> str:
    """``("nodeClasses", 2, "selector", "matchLabels", "a.io/b")`` -> ``nodeClasses[2]...["a.io/b"]``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.isidentifier():
            text += f".{part}" if text else part
        else:
            # Label keys like noderescue.io/class contain dots: quote them so the path stays readable.
            text += f'["{part}"]'
    return text


@dataclass
class LineMap:
    """Line (1-based) of every mapping key and sequence item, by YAML path."""

    lines: dict[YamlPath, int] = field(default_factory=dict)

    def line_for(self, path: YamlPath) -> int | None:
        """The line of ``path``, or of its nearest ancestor when the key is missing from the file."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


@dataclass(frozen=True)
class LoadedYaml:
    data: Any
    lines: LineMap
    issues: tuple[ConfigIssue, ...]  # duplicate keys


def load_yaml(text: str, source: str) -> LoadedYaml:
    """Parse one YAML document; raises a one-line ConfigError for syntax errors and empty files."""
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:  # the reader checks the whole text up front
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError.file_problem(
            source, f"invalid YAML at line {line}: control character #x{exc.character:04x} is not allowed"
        ) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError.file_problem(source, "the file is empty (no configuration in it)")
        lines = LineMap({(): node.start_mark.line + 1})
        issues: list[ConfigIssue] = []
        _walk(node, (), lines, issues, set())
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError.file_problem(source, _one_line_yaml_error(exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError.file_problem(source, f"invalid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
    return LoadedYaml(data, lines, tuple(issues))


def _one_line_yaml_error(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    parts = [p for p in (exc.context, exc.problem) if p]
    what = "; ".join(" ".join(p.split()) for p in parts) or "syntax error"
    return f"invalid YAML{where}: {what}"


def _walk(node: yaml.Node, path: YamlPath, lines: LineMap, issues: list[ConfigIssue], seen: set[int]) -> None:
    # Aliases share nodes: walk each node once (this also defuses "billion laughs" documents).
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        merged: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.append(value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a complex key; validation reports it as an unknown key
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in first_line:
                issues.append(
                    ConfigIssue(
                        format_path((*path, key)),
                        line,
                        f"duplicate key '{key}' (first at line {first_line[key]}); "
                        "YAML would silently keep only the last one",
                    )
                )
                continue
            first_line[key] = line
            lines.lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, issues, seen)
        # Keys brought in by `<<: *anchor` get the merge's lines unless set explicitly.
        for value_node in merged:
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                if isinstance(source, yaml.MappingNode):
                    for key_node, _ in source.value:
                        if isinstance(key_node, yaml.ScalarNode):
                            lines.lines.setdefault((*path, key_node.value), key_node.start_mark.line + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.lines[(*path, index)] = item.start_mark.line + 1
            _walk(item, (*path, index), lines, issues, seen)
