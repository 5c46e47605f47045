# Shared by the chain scripts (sourced after `rpd=(PYTHON -m rpd.cli)` is set).

held_out_current() {  # held_out_current HELD STUDENT_JSON: HELD scores the run's final student
  [ -f "$1" ] && "${rpd[0]}" -c "import json, sys; a, b = (json.load(open(p)) for p in \
sys.argv[1:]); sys.exit(a.get('step') != b['metrics']['steps'])" "$1" "$2"
}
