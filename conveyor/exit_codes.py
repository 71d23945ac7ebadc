"""Exit codes of the ``conveyor`` commands, the same for the same outcome in every command.

Documented in the README ("The command line").
"""

#: The execution failed, timed out or was cancelled; or the store refused the request
#: (not found, a transition its state does not allow), or a backend cannot be reached.
FAILED = 1
#: The definition, the input or the command line is invalid (nothing was started). Click
#: and Typer use 2 for usage errors too.
INVALID = 2
#: A second Ctrl-C: 128 + SIGINT, as shells report a process ended by it.
INTERRUPTED = 130
