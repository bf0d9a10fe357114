"""`python -m dgq_compiler ...` is the `dgq` command (for environments where scripts are not on PATH)."""
import sys

from dgq_compiler.cli.main import main

sys.exit(main())
