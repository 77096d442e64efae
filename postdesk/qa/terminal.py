"""The terminal of `postdesk qa score`, on prompt_toolkit: the only module of the scoring
session that touches the screen and keyboard.

The transcript is printed as ordinary output (it scrolls, the terminal's scrollback keeps
it, and it can be as long as the ticket). Under it, each question is a small inline
prompt_toolkit application (not full screen) that redraws its few lines every second (the
clock) and ends at the first key, in raw mode, so answers are single keystrokes.
When a key ends it the block is erased and a one-line record of the answer printed
instead, so the scrollback reads transcript, answers, score. Comments are read with
prompt_toolkit's line editor. Ctrl-C is a key like `q`: quit.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable

from prompt_toolkit import Application, PromptSession, print_formatted_text
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.keys import Keys
from prompt_toolkit.layout import Layout, Window
from prompt_toolkit.layout.controls import FormattedTextControl
from prompt_toolkit.styles import Style

from postdesk.qa.session import CTRL_C, ENTER
from postdesk.qa.transcript import Line

STYLE = Style.from_dict(
    {
        "title": "bold",
        "header": "",
        "customer": "ansicyan bold",
        "agent": "ansigreen bold",
        "note": "ansiyellow",
        "muted": "ansibrightblack",
        "progress": "reverse",
        "question": "bold",
        "keys": "ansibrightblack",
        "answer": "",
        "score": "bold ansimagenta",
        "message": "ansired",
    }
)


def fragments(lines: Iterable[Line]) -> FormattedText:
    """Lines as prompt_toolkit formatted text, styled by their `style`."""
    return FormattedText([(f"class:{line.style}", f"{line.text}\n") for line in lines])


class PromptToolkitTerminal:
    """A `postdesk.qa.score.Terminal` on the process's terminal."""

    def __init__(self) -> None:
        self.width = max(40, shutil.get_terminal_size((100, 30)).columns - 1)

    def show(self, lines: list[Line]) -> None:
        print_formatted_text(fragments(lines), style=STYLE, end="")

    def ask(self, screen: Callable[[], list[Line]]) -> str:
        bindings = KeyBindings()

        @bindings.add(Keys.Any)
        def _key(event: KeyPressEvent) -> None:
            event.app.exit(result=event.data)

        for name, result in (("enter", ENTER), ("c-c", CTRL_C), ("escape", "escape")):
            bindings.add(name, eager=True)(_exit_with(result))

        def text() -> FormattedText:
            shown = list(fragments(screen()))
            if shown:  # no blank line under the block
                style, last = shown[-1][0], shown[-1][1]
                shown[-1] = (style, last.rstrip("\n"))
            return FormattedText(shown)

        app: Application[str] = Application(
            layout=Layout(Window(FormattedTextControl(text), wrap_lines=True)),
            key_bindings=bindings,
            style=STYLE,
            full_screen=False,
            refresh_interval=1.0,
            erase_when_done=True,
        )
        return app.run()

    def read_line(self, prompt: str) -> str | None:
        try:
            session: PromptSession[str] = PromptSession(erase_when_done=True)
            return session.prompt(prompt)
        except (KeyboardInterrupt, EOFError):
            return None


def _exit_with(result: str) -> Callable[[KeyPressEvent], None]:
    def handler(event: KeyPressEvent) -> None:
        event.app.exit(result=result)

    return handler
