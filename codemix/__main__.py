from codemix.cli import main

raise SystemExit(main())
