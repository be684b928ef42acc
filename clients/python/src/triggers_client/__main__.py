"""``python -m triggers_client worker ...``."""

from .cli import main

raise SystemExit(main())
