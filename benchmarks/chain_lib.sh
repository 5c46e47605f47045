# Shared by the chain scripts (sourced after `rpd=(PYTHON -m rpd.cli)` is set).

held_out_current() {  # held_out_current HELD JSON: HELD scores the policy JSON describes, the
  # final student (student.json) or a checkpoint (checkpoints/best.json, its evaluation's row)
  [ -f "$1" ] && "${rpd[0]}" -c "import json, sys; a, b = (json.load(open(p)) for p in \
sys.argv[1:]); sys.exit(a.get('step') != (b['metrics']['steps'] if 'metrics' in b \
else int(b['step'])))" "$1" "$2"
}
