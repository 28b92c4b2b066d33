# Shared body of the run_*.sh scripts (sourced; expects RECIPE). Positional DATASET and ROOT_DIR, then train.py args.
DATASET=${DATASET:-CUHK-PEDES}
ROOT_DIR=${ROOT_DIR:-data}
if [[ $# -gt 0 && $1 != --* ]]; then DATASET=$1; shift; fi
if [[ $# -gt 0 && $1 != --* ]]; then ROOT_DIR=$1; shift; fi
CONFIG=configs/${DATASET}/${RECIPE}.yaml
if [[ ! -f $CONFIG ]]; then
  echo "unknown dataset '${DATASET}': expected one of CUHK-PEDES, ICFG-PEDES, RSTPReid (no ${CONFIG})" >&2
  exit 2
fi
PYTHON=${PYTHON:-python}
if [[ -n ${NPROC:-} && ${NPROC} -gt 1 ]]; then
  exec torchrun --standalone --nproc_per_node "${NPROC}" train.py --config_file "$CONFIG" --root_dir "$ROOT_DIR" "$@"
fi
exec "$PYTHON" train.py --config_file "$CONFIG" --root_dir "$ROOT_DIR" "$@"
