"""Tables that fit the reader's terminal, or become lines when they can't.

A rich Table squeezed below its content's width cuts its cells ("arit…", "temp…"), and
the reader loses what the table was for. Every table the CLI prints is a `Grid`: its
cells are never cut; a grid wider than the console is printed as one line per row
(`name: column value, column value`), which wraps like any text. Output that is not a
terminal (a log file) gets grids at their natural width (see terminal.SafeConsole).
"""

from __future__ import annotations

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

#: Between two columns: a space of padding each side of the (blank) rule.
_GAP = 3


class Grid:
    """A table of text cells: the first `names` columns (and any named in `wrap`) are
    left-aligned text, the rest right-aligned figures. Columns in `wrap` may wrap at
    their spaces (a list of finish reasons); no other cell wraps or is cut."""

    def __init__(self, title: str, columns: list[str], names: int = 1, wrap: tuple[str, ...] = ()):
        self.title = title
        self.columns = columns
        self.names = names
        self.wrap = wrap
        self.rows: list[list[Text]] = []

    def add_row(self, *cells: str | Text) -> None:
        self.rows.append([c if isinstance(c, Text) else Text(c) for c in cells])

    @property
    def row_count(self) -> int:
        return len(self.rows)

    def width(self) -> int:
        """The narrowest this grid renders as a table with every cell whole."""
        total = _GAP * (len(self.columns) - 1)
        for i, header in enumerate(self.columns):
            cells = [header, *(row[i].plain for row in self.rows)]
            if header in self.wrap:
                total += max(cell_len(word) for cell in cells for word in cell.split() or [""])
            else:
                total += max(cell_len(cell) for cell in cells)
        return total

    def table(self) -> Table:
        table = Table(
            title=self.title,
            title_justify="left",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
        )
        for i, column in enumerate(self.columns):
            text = i < self.names or column in self.wrap
            table.add_column(
                column, justify="left" if text else "right", no_wrap=column not in self.wrap
            )
        for row in self.rows:
            table.add_row(*row)
        return table

    def lines(self) -> list[Text]:
        """The grid as text: its title, then a line per row naming each value."""
        lines = [Text(self.title, style="italic")]
        for row in self.rows:
            line = Text("  ")
            line.append_text(Text(" ").join(row[: self.names]))
            figures = [
                Text(f"{header} ").append_text(cell)
                for header, cell in zip(self.columns[self.names :], row[self.names :], strict=True)
                if cell.plain
            ]
            line.append(": ").append_text(Text(", ").join(figures))
            lines.append(line)
        return lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.width() <= options.max_width:
            yield self.table()
        else:
            yield from self.lines()
