#!/usr/bin/env bash
# Markdown report of this checkout's results against BASE (a git revision): metrics, params, plots.
#   bash .ci/pr_report.sh BASE OUT.md
# Used by .github/workflows/reproduce.yml (posted with CML) and runnable locally.
set -euo pipefail
base=${1:?usage: pr_report.sh BASE OUT.md}
out=${2:?usage: pr_report.sh BASE OUT.md}
export DVC_NO_ANALYTICS=1

{
  echo "## Reproduced results against \`$base\`"
  echo
  echo "### Metrics"
  dvc metrics diff "$base" --md --all --precision 4 || echo "(dvc metrics diff failed)"
  echo
  echo "### Params"
  params=$(dvc params diff "$base" --md)
  echo "${params:-No parameter changed.}"
  echo
  echo "### Plots"
  # Image plots are committed files: show the ones this checkout changed (or all when none did).
  changed=$(git diff --name-only "$base" -- 'plots/*.png' || true)
  for png in ${changed:-plots/*.png}; do
    [ -f "$png" ] && printf '![%s](./%s)\n\n' "$(basename "$png" .png)" "$png"
  done
  echo "Interactive plots (training curves, PR, Dice vs threshold, per-image Dice): \`dvc plots diff $base\`."
} > "$out"
echo "report written to $out"
