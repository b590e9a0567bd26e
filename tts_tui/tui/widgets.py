"""Small widgets the TUI's screens share."""

from __future__ import annotations

from typing import Any

from textual.binding import Binding
from textual.content import Content
from textual.widget import Widget
from textual.widgets import Input, Tree


class Panel(Widget):
    """Fixed-size text that repaints without a layout pass (Static.update re-lays out the
    screen, which at 20 updates a second costs the search real CPU on a small machine)."""

    DEFAULT_CSS = "Panel { height: auto; }"

    def __init__(self, text: Any = "", **kw: Any) -> None:
        super().__init__(**kw)
        self.text = text

    def render(self) -> Any:
        # A plain string is shown as typed: answers such as "[x]" are not markup.
        return Content(self.text) if isinstance(self.text, str) else self.text

    def update(self, text: Any) -> None:
        if text != self.text:
            self.text = text
            self.refresh()


class NumberInput(Input):
    """A numeric field; + and - step it (digits only are typed, so +/- are free keys)."""

    BINDINGS = [
        Binding("plus,equals_sign", "step(1)", "+", show=False, priority=True),
        Binding("minus", "step(-1)", "-", show=False, priority=True),
    ]

    def __init__(self, value: Any, step: float, title: str, is_float: bool = False, **kw: Any) -> None:
        super().__init__(str(value), restrict=r"[0-9.]*" if is_float else r"[0-9]*", **kw)
        self.border_title = title
        self.step = step
        self.is_float = is_float

    def action_step(self, sign: int) -> None:
        try:
            cur = float(self.value or 0)
        except ValueError:
            cur = 0.0
        new = max(0.0, cur + sign * self.step)
        self.value = f"{new:.2f}".rstrip("0").rstrip(".") if self.is_float else str(int(new))


class LiveTree(Tree[int]):
    """A Tree that grows without re-laying-out the screen.

    Textual's Tree asks for a layout pass on every change (a new node, a new virtual
    size), and a layout pass re-renders every widget on screen: on a 2-core laptop that
    was ~30 ms per frame taken from the search. This tree's box is fixed by CSS, so a new
    node only changes its virtual size and scrollbars: it repaints itself and updates
    those directly. (A scrollbar appearing still takes the normal layout path.)
    """

    def __init__(self, *args: Any, **kw: Any) -> None:
        self._quiet = False  # set while _build changes the virtual size
        self._widths: dict[Any, tuple[tuple[int, bool, bool], int]] = {}
        super().__init__(*args, **kw)

    def clear(self) -> Any:
        self._widths.clear()  # clear() restarts node ids: cached widths would go stale
        return super().clear()

    def get_label_width(self, node: Any) -> int:
        # Textual measures every label on every rebuild; labels only change through
        # set_label (which bumps node._updates), so widths are cached per node.
        key = (node._updates, node._expanded, node.allow_expand)
        hit = self._widths.get(node._id)
        if hit is not None and hit[0] == key:
            return hit[1]
        width = super().get_label_width(node)
        self._widths[node._id] = (key, width)
        return width

    def _invalidate(self) -> None:
        self._clear_line_cache()
        self._updates += 1
        self.root._reset()
        self.refresh()

    def _build(self) -> None:
        before = self.virtual_size
        self._quiet = True
        try:
            super()._build()
        finally:
            self._quiet = False
        if self.virtual_size != before:
            self._scroll_update(self.virtual_size)
            self.refresh()

    def refresh(self, *regions: Any, repaint: bool = True, layout: bool = False, recompose: bool = False) -> Any:
        if self._quiet:
            layout = False  # only the virtual size moved: handled in _build
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)
