"""The lab wing: sweeps, benchmarks, plots, AOT compilation, model inspection.

Tools that drive or measure the trainer from outside (`python -m jaxlm.lab.sweep`,
`python -m jaxlm.lab.bench`, `python -m jaxlm.lab.bench_data`, `python -m jaxlm.lab.inspect`);
`python -m jaxlm.lab.bench --vs=nanogpt|lstm` runs jaxlm side by side with a peer program.
The core (everything in `jaxlm` outside this folder) never imports it; it alone needs
matplotlib (`pip install -e ".[lab]"`).
"""
