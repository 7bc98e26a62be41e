from edgebot.cli import main

raise SystemExit(main())
