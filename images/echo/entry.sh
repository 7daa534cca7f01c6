# Prints the message and the _abaco context, then exits with ${EXIT_CODE:-0}.
echo "MSG=$MSG"
env | sort | grep '^_abaco'
exit "${EXIT_CODE:-0}"
