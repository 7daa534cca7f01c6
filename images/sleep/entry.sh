# Sleeps ${SLEEP:-30} seconds then prints done. As PID 1 the shell would ignore SIGTERM, so trap
# it, and sleep in the background so the trap runs at once rather than after the sleep.
trap 'echo stopped; exit 143' TERM INT
echo "sleeping ${SLEEP:-30}"
sleep "${SLEEP:-30}" &
wait $!
echo done
