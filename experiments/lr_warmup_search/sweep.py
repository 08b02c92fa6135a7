"""Learning rate x warmup random search for configs/shakespeare_char.py, by validation loss.

  python -m jaxlm.lab.sweep experiments/lr_warmup_search --parallel=2

The recipe's model and data as they are (4 layers, 128 wide, batch 12 x 64 chars), with a
short budget of 300 steps (the recipe trains 2,000) and successive halving: 9 draws train
100 steps, the best third continue to 300.
"""

import os

from jaxlm.lab.sweep import Halving, LogUniform, Sweep

# The corpus: $JAXLM_SHARED_DATA (default ../shared/data, from the repository root).
DATA = os.path.join(os.environ.get("JAXLM_SHARED_DATA", "../shared/data"),
                    "tinyshakespeare", "input.txt")


def get_sweep():
  return Sweep(
      config="configs/shakespeare_char.py",
      overrides={
          "data.path": DATA,
          "num_train_steps": 300,
          "eval_every_steps": 50,
          "eval_steps": 20,
          "checkpoint_every_steps": 100,
          "log_every_steps": 25,
          "sample.num_tokens": 0,
      },
      random={
          "optimizer.learning_rate": LogUniform(3e-4, 3e-2),
          "optimizer.warmup_steps": LogUniform(5, 200, integer=True),
      },
      num_samples=9,
      search_seed=0,
      metric="eval_loss",
      halving=Halving(min_steps=100, eta=3),
      description="Random search over peak learning rate and warmup for the shakespeare_char "
                  "recipe, 300-step budget.",
  )
