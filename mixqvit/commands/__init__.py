"""One module per ``mixqvit`` command, each with ``HELP``, ``DESCRIPTION``, ``add_arguments(parser)``
and ``run(args) -> exit status``.

Importing a command module must not import torch (``mixqvit solve --help`` and the allocation
commands stay torch-free); the torch work is imported inside ``run``.
"""

#: Command names in the order ``mixqvit --help`` lists them; each is a module of this package.
COMMANDS = ("profile", "solve", "compare", "quantize", "export", "qat", "train", "demo")
