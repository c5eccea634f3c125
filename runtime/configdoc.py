"""Render the configuration reference table from ``runtime.config`` itself.

``python -m runtime.configdoc README.md`` rewrites the table between the README's
``config-table`` markers; a test fails when the README and the configuration drift apart.
Descriptions come from the ``#:`` comments above each field, types and defaults from the
annotations.
"""

import inspect
import re
import sys
from pathlib import Path

import msgspec

from runtime.config import ENV_PREFIX, Config

START = "<!-- config-table:start -->"
END = "<!-- config-table:end -->"


def _comments(cls: type) -> dict[str, str]:
    """Field name -> its ``#:`` comment lines joined."""
    found: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = re.match(r"(\w+)\s*:", stripped)
        if match and pending:
            found[match.group(1)] = " ".join(pending)
        pending = []
    return found


def _type_name(annotation: object) -> str:
    text = str(annotation).replace("typing.", "")
    text = re.sub(r"Annotated\[(\w+), .*\]", r"\1", text)
    literal = re.fullmatch(r"Literal\[(.*)\]", text)
    if literal:
        return "one of " + literal.group(1).replace("'", "`").replace(", ", " \\| ")
    return text.replace("<class '", "").replace("'>", "")


def _default(value: object) -> str:
    if isinstance(value, list | dict):
        return "empty" if not value else str(value)
    return f"`{value}`" if value != "" else "empty"


def table() -> str:
    rows = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    rows.append(f"| `{ENV_PREFIX}APP` | str | `default` | App id of tokens without an `app` "
                "claim, and of the dev registration endpoint. |")
    defaults = Config()
    for section, _ in Config.__annotations__.items():
        value = getattr(defaults, section)
        if not isinstance(value, msgspec.Struct):
            continue
        cls = type(value)
        comments = _comments(cls)
        for field in cls.__struct_fields__:
            name = f"{ENV_PREFIX}{section.upper()}_{field.upper()}"
            meaning = comments.get(field)
            if meaning is None:
                raise ValueError(f"{name}: document the field with a '#:' comment")
            rows.append(f"| `{name}` | {_type_name(cls.__annotations__[field])} | "
                        f"{_default(getattr(value, field))} | {meaning} |")
    return "\n".join(rows)


def rewrite(path: Path) -> bool:
    """Replace the table in ``path``; returns whether it changed."""
    text = path.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    updated = f"{head}{START}\n{table()}\n{END}{tail}"
    path.write_text(updated)
    return updated != text


if __name__ == "__main__":
    rewrite(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
