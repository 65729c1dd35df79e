"""The one path by which text a user supplied (a spec's description, paper, names) enters generated source.

A generated module is Python that runs on import, so no user string may be pasted into it raw: a ``\"\"\"`` in
a description would close the docstring and what follows would run. Every such string goes through
:func:`in_docstring` (text inside the module's ``\"\"\"`` docstring, reading back unchanged from ``__doc__``) or
:func:`python_literal` (a string constant). LaTeX has its own escaping, in :mod:`lstmgen.analysis.derivation_printer`.
"""

from __future__ import annotations

_DOCSTRING_ESCAPES = {"\\": "\\\\", '"': '\\"'}


def in_docstring(text: str) -> str:
    """``text`` escaped for the inside of a (non-raw) triple-quoted docstring; ``__doc__`` reads it back as is.

    Backslashes and double quotes are escaped, and so is every character that is not printable (newlines,
    NUL, line and paragraph separators, lone surrogates...), as ``repr`` writes it; printable non-ASCII
    (σ, ü) stays readable.
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    out = []
    for ch in text:
        if ch in _DOCSTRING_ESCAPES:
            out.append(_DOCSTRING_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(_escape(ch))
    return "".join(out)


def python_literal(text: str) -> str:
    """A Python string literal of ``text``: ``repr``'s (always valid source, evaluates back to ``text``), in
    double quotes where that needs no escape, as the rest of the generated code is formatted."""
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    literal = repr(text)
    # repr picks single quotes unless the text holds ' and no "; so here the text holds no quote at all.
    if literal.startswith("'") and '"' not in text:
        literal = f'"{literal[1:-1]}"'
    return literal


def in_comment(text: str) -> str:
    """``text`` for one ``#`` comment line: nothing in it can end the line (escaped as in a docstring)."""
    return in_docstring(text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch == "\n":
        return "\\n"
    if ch == "\t":
        return "\\t"
    if ch == "\r":
        return "\\r"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
