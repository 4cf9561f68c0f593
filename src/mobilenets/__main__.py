"""``python -m mobilenets`` runs the command-line interface (and works under ``torchrun``)."""

from .cli import main

raise SystemExit(main())
