"""config.cpu_devices splits the host CPU into several JAX devices (data parallel on cores)."""

import subprocess
import sys

from conftest import REPO


def test_cpu_devices_gives_that_many_devices_in_a_fresh_process():
  code = ("import os; os.environ.pop('XLA_FLAGS', None)\n"
          "from jaxlm import sharding; sharding.use_cpu_devices(3)\n"
          "import jax; print(jax.device_count())")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip().splitlines()[-1] == "3"
