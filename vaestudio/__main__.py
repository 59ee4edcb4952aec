from vaestudio.cli import main

raise SystemExit(main())
