from quantum.cli import main

raise SystemExit(main())
