from postergenre.cli import main

raise SystemExit(main())
