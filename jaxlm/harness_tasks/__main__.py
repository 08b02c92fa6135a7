import sys

from jaxlm.harness_tasks import main

sys.exit(main())
