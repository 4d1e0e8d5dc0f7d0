"""``python -m clip2video`` runs the command line."""

from clip2video.cli import main

raise SystemExit(main())
