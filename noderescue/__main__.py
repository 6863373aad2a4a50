from noderescue.cli import main

raise SystemExit(main())
