"""Text from data (model names, file paths, messages, model-card fields) made safe to show.

Streamlit renders markdown in ``st.markdown``, ``st.title``, ``st.error`` and friends: a folder named
``![x](https://example.org/p.png)`` would make every browser showing the page fetch that URL, and one
named ``**`` or with a backtick would garble the text. Every string that comes from the models or a
result file goes through :func:`md` (inside markdown) or :func:`plain` (plain-text widgets) first.
Plotly draws its titles, legends, hover labels and axis ticks with a small HTML subset (``<b>``,
``<br>``, ``<a href=...>`` links): a model id or layer name put in a figure goes through :func:`chart`.
No Streamlit here.
"""

from __future__ import annotations

import re

# Characters that open markdown structure inline (emphasis, code, links, images, HTML, tables,
# strikethrough, Streamlit's LaTeX and colour directives): each is escaped with a backslash. '-', '.',
# '+' and ':' only matter at a line start or in a bare URL (a link, never fetched) and stay as they are,
# so hyphenated ids read the same in the page source.
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#!|~$&])")


def plain(text: object) -> str:
    """``text`` as a printable string: undecodable file-name bytes (lone surrogates) become ``\\xNN``
    and control characters (ANSI escapes, newlines inside a name) their escapes."""
    s = str(text)
    if s.isprintable():
        return s
    s = s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in s)


def md(text: object) -> str:
    """``text`` escaped for Streamlit markdown: shown literally, never as a link, image, HTML or math."""
    return _MARKDOWN.sub(r"\\\1", plain(text))


# plotly.js reads tags in every text it draws and decodes entities (named and numeric) in the text between
# them; '$...$' would be typeset as LaTeX where MathJax is loaded. Each becomes a numeric entity, which
# plotly.js draws back as the character itself.
_PLOTLY = str.maketrans({"&": "&#38;", "<": "&#60;", ">": "&#62;", "$": "&#36;"})


def chart(text: object) -> str:
    """``text`` for a plotly figure (title, legend entry, hover text, axis category): drawn literally,
    never as bold, a line break or a link.

    Examples
    --------
    >>> chart('<a href="https://example.org">x</a> & $y$')
    '&#60;a href="https://example.org"&#62;x&#60;/a&#62; &#38; &#36;y&#36;'
    """
    return plain(text).translate(_PLOTLY)
