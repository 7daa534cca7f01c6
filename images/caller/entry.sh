#!/bin/sh
# Sends a message to $TARGET_ACTOR as this actor's owner, using the injected access token.
echo "token_length=${#_abaco_access_token}"
if wget -q -O - \
    --header "Authorization: Bearer ${_abaco_access_token}" \
    --header "Content-Type: application/json" \
    --post-data "{\"message\": \"${CALL_MESSAGE:-hello from an actor}\"}" \
    "${_abaco_api_server}/actors/${TARGET_ACTOR}/messages" 2>/tmp/err; then
  echo
  echo "CALL_OK"
else
  echo "CALL_FAILED: $(cat /tmp/err)"
  exit 1
fi
