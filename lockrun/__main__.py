"""Allow ``python -m lockrun``."""

from lockrun.entry import main

main()
