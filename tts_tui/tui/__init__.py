"""The Textual TUI: watch the reasoning tree grow live and steer the search."""
