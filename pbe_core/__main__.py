import sys

try:  # Ctrl-C while Python starts up is an interrupt, not a traceback
    from .cli import main
except KeyboardInterrupt:
    sys.exit(130)

sys.exit(main())
