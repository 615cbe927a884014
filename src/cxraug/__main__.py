from cxraug.cli import main

raise SystemExit(main())
