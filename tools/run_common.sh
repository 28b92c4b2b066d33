# Shared body of the run_*.sh scripts (sourced; expects RECIPE and REPO). Positional DATASET and ROOT_DIR, then
# train.py args. Paths are the caller's: a relative ROOT_DIR or --output_dir is relative to the directory the
# script is run from (train.py makes them absolute and stores them in the run's configs.yaml).
DATASET=${DATASET:-CUHK-PEDES}
ROOT_DIR=${ROOT_DIR:-data}
if [[ $# -gt 0 && $1 != --* ]]; then DATASET=$1; shift; fi
if [[ $# -gt 0 && $1 != --* ]]; then ROOT_DIR=$1; shift; fi
CONFIG=${REPO}/configs/${DATASET}/${RECIPE}.yaml
if [[ ! -f $CONFIG ]]; then
  echo "error: unknown dataset '${DATASET}': expected one of CUHK-PEDES, ICFG-PEDES, RSTPReid (no ${CONFIG})" >&2
  exit 2
fi
PYTHON=${PYTHON:-python}
if [[ -n ${NPROC:-} && ${NPROC} -gt 1 ]]; then
  exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "${NPROC}" "${REPO}/train.py" \
    --config_file "$CONFIG" --root_dir "$ROOT_DIR" "$@"
fi
exec "$PYTHON" "${REPO}/train.py" --config_file "$CONFIG" --root_dir "$ROOT_DIR" "$@"
