#!/bin/bash
# jaxlm on a Cloud TPU pod slice (e.g. v5e-32: 8 hosts x 4 chips): every host runs the same
# command; JAX detects the slice from the TPU VM metadata and forms one job (the log says
# "Distributed job (cluster gcetpu detected)", or gketpu on GKE, with the process index and count).
#
#   TPU=my-v5e-32 ZONE=us-west4-a bash experiments/launch/tpu_pod.sh
#
# Workdir: must be the same path on every host. Use a shared filesystem mounted on all hosts
# (Filestore/NFS, or a gcsfuse mount of a bucket). A gs:// workdir passed directly needs
# jaxlm's workdir files (config.json, tokenizer.json, metrics.jsonl) to go through etils.epath
# (issue #20 item 4); until that lands, use a mount. Data files: identical on every host
# (copied, or on the shared mount); the processes compare their hashes at start-up.
#
# Preemption (spot/preemptible TPUs, maintenance): the hosts get SIGTERM; jaxlm checkpoints at
# the current step and exits. Recreate the slice (or wait for it to come back) and run this
# script again with the same workdir: training resumes from the latest checkpoint.
#
# NOT tested here: no TPU was available. The detection path is JAX's own (GceTpuCluster);
# what was tested is the same jaxlm code path under simulated SLURM and Open MPI variables.
set -euo pipefail
: "${TPU:?set TPU=<tpu name>}" "${ZONE:?set ZONE=<zone>}"
WORKDIR=${WORKDIR:-/mnt/shared/jaxlm/gpt_small}

gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="
  cd ~/jaxlm && source .venv/bin/activate &&
  python -m jaxlm.main --config=configs/gpt.py --workdir=$WORKDIR \
      --config.data.path=/mnt/shared/data/corpus/*.txt \
      --config.data.data_dir=/mnt/shared/tfds 2>&1 | tee -a ~/jaxlm_\$(hostname).log"
