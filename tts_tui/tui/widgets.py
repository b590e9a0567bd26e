"""Small widgets the TUI's screens share."""

from __future__ import annotations

from typing import Any

from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import Input


class Panel(Widget):
    """Fixed-size text that repaints without a layout pass (Static.update re-lays out the
    screen, which at 20 updates a second costs the search real CPU on a small machine)."""

    DEFAULT_CSS = "Panel { height: auto; }"

    def __init__(self, text: Any = "", **kw: Any) -> None:
        super().__init__(**kw)
        self.text = text

    def render(self) -> Any:
        return self.text

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
